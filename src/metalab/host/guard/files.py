"""Files the guard writes: tokens, per-user socket dirs, env files, notices in users' homes, atomic writes.

The guard runs as root and writes into homes that users control, so writes there never follow symlinks: the
directory is opened with O_NOFOLLOW, checked to be owned by the user, and the file is written to a fresh temporary
name and renamed into place (a planted link is replaced, never written through).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import secrets
import stat
import subprocess
from typing import Any, Dict, Optional


class FileError(Exception):
    pass


def read_json_config(path: str, error: type, env_name: str) -> Any:
    """The JSON of a configuration file, or ``error`` (an exception class) saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise error(f"config file {path} not found (set --config or {env_name})") from None
    except json.JSONDecodeError as exc:
        raise error(f"config file {path}: invalid JSON: {exc}") from None
    except OSError as exc:
        raise error(f"config file {path}: {exc.strerror}") from None


def _as_root() -> bool:
    """Ownership is only given away (and checked) as root, as in production; tests run unprivileged."""
    return os.geteuid() == 0


def atomic_write(path: str, content: str, mode: int = 0o644) -> None:
    """Write a file atomically (temp file in the same directory + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_private_dir(path: str) -> None:
    """A root-only directory (0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise FileError(f"{path} is not a directory")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def new_token(token_dir: str, user: str) -> str:
    """A fresh runtime token for USER (every start gets one), root-only (0600), replacing the previous one."""
    ensure_private_dir(token_dir)
    token = secrets.token_urlsafe(32)
    atomic_write(os.path.join(token_dir, user), token + "\n", mode=0o600)
    return token


def remove_token(token_dir: str, user: str) -> None:
    """A stopped runtime's token opens nothing, and nobody is handed it any more."""
    remove_quietly(os.path.join(token_dir, user))


def read_token(token_dir: str, user: str) -> Optional[str]:
    try:
        with open(os.path.join(token_dir, user), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except FileNotFoundError:
        return None


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise FileError(f"front door group {name!r} does not exist on this host (runtime.frontdoor_group)") from None


def ensure_socket_dir(socket_root: str, user: str, uid: int, frontdoor_gid: int) -> str:
    """SOCKET_ROOT/USER: mode 0750, owned by the user, group = the front door's group (nginx reaches the socket)."""
    os.makedirs(socket_root, mode=0o755, exist_ok=True)
    path = os.path.join(socket_root, user)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o750)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise FileError(f"{path} exists and is not a directory")
    if _as_root() and (st.st_uid, st.st_gid) != (uid, frontdoor_gid):
        os.lchown(path, uid, frontdoor_gid)
    os.chmod(path, 0o750)
    return path


def socket_tmpfs_options(uid: int, gid: int, size: str, selinux: bool = False) -> str:
    """The socket tmpfs's mount options; on SELinux hosts labelled container_file_t (s0: her runtime, at her own
    categories, may write there, and nginx may reach the socket), since a new tmpfs would be tmpfs_t."""
    options = f"size={size},nr_inodes=64,mode=0750,uid={uid},gid={gid},nosuid,nodev,noexec"
    return options + (",context=system_u:object_r:container_file_t:s0" if selinux else "")


def mount_socket_tmpfs(path: str, uid: int, gid: int, size: str, selinux: bool = False) -> None:
    """Put the socket directory on its own small tmpfs (root only): what the runtime writes there cannot fill the
    host's /run, which every service shares. Nothing happens when it is mounted already."""
    if not size or not _as_root() or os.path.ismount(path):
        return
    options = socket_tmpfs_options(uid, gid, size, selinux)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "metalab-socket", path],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if proc.returncode != 0:
        raise FileError(f"mounting a {size} tmpfs on {path} failed: {proc.stderr.strip()}")


def unmount_socket_tmpfs(socket_root: str, user: str) -> None:
    """Unmount USER's socket tmpfs (after her runtime stopped); a directory that is not a mount is left alone."""
    path = os.path.join(socket_root, user)
    if not _as_root() or not os.path.ismount(path):
        return
    proc = subprocess.run(["umount", path], capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:  # busy: detach now, the kernel frees it when the last user goes
        subprocess.run(["umount", "-l", path], capture_output=True, text=True, check=False, timeout=30)


def write_env_file(env_dir: str, user: str, env: Dict[str, str]) -> str:
    """A 0600 env file in a root-only directory, for ``podman run --env-file``; the caller removes it."""
    ensure_private_dir(env_dir)
    path = os.path.join(env_dir, f"{user}.env")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    for key, value in env.items():
        if "\n" in key or "\n" in value or "=" in key:
            raise FileError(f"environment variable {key!r} cannot be written to an env file")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def remove_quietly(path: Optional[str]) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def write_user_file(home: str, uid: int, gid: int, subdir: str, name: str, content: str) -> str:
    """Write HOME/SUBDIR/NAME owned by the user, without following any link the user may have planted."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    home_fd = os.open(home, flags)
    try:
        try:
            os.mkdir(subdir, 0o755, dir_fd=home_fd)
            created = True
        except FileExistsError:
            created = False
        dir_fd = os.open(subdir, flags, dir_fd=home_fd)
        try:
            st = os.fstat(dir_fd)
            if created and _as_root():
                os.fchown(dir_fd, uid, gid)
            elif _as_root() and st.st_uid != uid:
                raise FileError(f"{home}/{subdir} is not owned by uid {uid}; not writing there")
            tmp = f".{name}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
                if _as_root():
                    os.fchown(fh.fileno(), uid, gid)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        os.close(home_fd)
    return os.path.join(home, subdir, name)
