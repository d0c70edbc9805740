"""Sandbox records: one directory per sandbox under the state directory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from metalab.labctl.sandbox import ssh
from metalab.labctl.sandbox.errors import SandboxError


def state_root() -> Path:
    return Path(os.environ.get("METALAB_SANDBOX_DIR", "/var/lib/metalab-sandbox"))


def sandbox_dir(name: str) -> Path:
    return state_root() / name


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialises allocation of addresses and ports between concurrent `up` calls."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    # A lock on the directory itself: no lock file is left behind.
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load(name: str) -> dict[str, Any] | None:
    path = sandbox_dir(name) / "sandbox.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def save(record: dict[str, Any]) -> None:
    path = sandbox_dir(record["name"]) / "sandbox.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def all_records() -> list[dict[str, Any]]:
    root = state_root()
    if not root.is_dir():
        return []
    records = []
    for entry in sorted(root.iterdir()):
        record = load(entry.name) if entry.is_dir() else None
        if record is not None:
            records.append(record)
    return records


def alive(pid: int | None, expect: str) -> bool:
    """True when pid runs and is the program we started (pids get reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and os.path.basename(cmdline[0].decode(errors="replace")) == expect


def terminate(pid: int | None, expect: str, timeout: float, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started: the signal, then SIGKILL after the timeout."""
    if not alive(pid, expect):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, expect):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not alive(pid, expect):
            return
        time.sleep(0.1)
    raise SandboxError(f"process {pid} ({expect}) did not stop")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record that `up --json` and `list --json` print."""
    keys = (
        "name",
        "kind",
        "ansible_host",
        "ansible_port",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "lab_http_proxy",
        "lab_address",
        "https_port",
        "nvme",
        "created",
    )
    return {key: record[key] for key in keys if key in record}


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_exec(proc: Any, expect: str, timeout: float = 10) -> None:
    """Wait until a child we just started has exec'd `expect`, so that `alive` recognises it from now on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or alive(proc.pid, expect):
            return
        time.sleep(0.02)


def launch(record: dict[str, Any], argv: list[str], log: Path, expect: str, ssh_timeout: float, **where: Any) -> None:
    """Start a sandbox's machine (``argv``, output to ``log``), record it with ``where`` (ansible_host, ansible_port,
    ansible_user, ansible_ssh_private_key_file...) and wait until its SSH answers."""
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_exec(proc, expect)
    record.update(pid=proc.pid, **where)
    save(record)
    key = Path(where["ansible_ssh_private_key_file"])
    ssh.wait_for_ssh(
        where["ansible_host"], where["ansible_port"], where["ansible_user"], key,
        timeout=ssh_timeout, still_running=lambda: proc.poll() is None,
    )  # fmt: skip


@contextlib.contextmanager
def removed_on_failure(name: str, log: Path, down: Callable[[str], None]) -> Iterator[None]:
    """A sandbox that fails to come up is taken down; a SandboxError then ends with the last lines of ``log``."""
    try:
        yield
    except BaseException as error:
        tail = log_tail(log)
        down(name)
        if isinstance(error, SandboxError) and tail:
            raise SandboxError(f"{error}; last lines of its output:\n{tail}") from None
        raise
