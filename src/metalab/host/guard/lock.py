"""The guard lock: ``fcntl.flock`` on a file in a root-only directory, with a gate a waiting guard run announces
itself on (see metalab.host.guard.sessions for who takes it when)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from typing import Optional

from metalab.host.guard.report import Failure


class GuardLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def acquire(self, wait: float, mode: int = fcntl.LOCK_EX) -> bool:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if os.geteuid() == 0:
            st = os.lstat(directory)
            if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o022:  # anyone else could hold the lock file
                raise Failure(f"the lock directory {directory} must be owned by root and writable by root only")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline_at = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline_at:
                os.close(fd)
                return False
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
