"""Drain: while the drain file exists, the host starts no new runtimes (a rolling update is working on it).

``playbooks/rolling_update.yml`` writes the file before it updates a host and removes it afterwards; a host whose
update failed stays drained until an admin looks at it. The file's first line is the reason shown to users.
Runtimes already running are not touched by a drain: ``metalab-guard drain`` warns their users, and the playbook
stops them only after its own timeout, when asked to.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from metalab.host.guard import files, runtime_status
from metalab.host.guard.policy import format_clock, format_iso
from metalab.host.guard.report import NOTICE_DIR, NOTICE_FILE, RunReport

if TYPE_CHECKING:  # pragma: no cover
    from metalab.host.guard.sessions import Lab

DEFAULT_DRAIN_FILE = "/etc/metalab/drain"
DEFAULT_REASON = "a rolling update"
STOP_REASON = "host-update"


@dataclass(frozen=True)
class Drain:
    path: str
    reason: str
    since: float


def read(path: str) -> Optional[Drain]:
    """The drain in force, or None. A drain file that exists but cannot be read still drains the host."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(4096)
        since = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return Drain(path=path, reason=DEFAULT_REASON, since=0.0)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return Drain(path=path, reason=lines[0] if lines else DEFAULT_REASON, since=since)


def refusal(host: str, drain: Drain) -> str:
    """The message a start gets on a drained host."""
    since = f" since {format_clock(drain.since)} UTC" if drain.since else ""
    return (
        f"cannot start a runtime: host is being updated ({host}{since}: {drain.reason}); "
        f"no new runtimes until the update is done (drain file {drain.path}), try again later"
    )


def set_drain(path: str, reason: str) -> bool:
    """Drain the host; True when it was not drained before. An existing drain (and its reason) is kept."""
    if read(path) is not None:
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    files.atomic_write(path, (reason.strip() or DEFAULT_REASON) + "\n", 0o644)
    return True


def clear(path: str) -> bool:
    """Undrain the host; True when it was drained."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def drain_message(host: str, reason: str) -> str:
    return (
        f"metalab: {host} is being updated ({reason}): no new runtimes can start here until it is done. "
        "Your runtime keeps running for now; save your work."
    )


def _running(lab: Lab) -> List[Dict[str, Any]]:
    return [
        {"user": r.user, "kind": r.kind, "state": r.state, "started": format_iso(r.started)}
        for r in lab.ledger.open_runtimes()
    ]


def drain(
    lab: Lab,
    reason: str,
    now: float,
    wait: float = 0.0,
    stop: bool = False,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Dict[str, Any]:
    """Drain the host and warn the users of its running runtimes (notice file in the home and their terminals).

    The drain file is set under the guard lock, and the starts already past their drain check are waited for,
    so a start in progress finishes first: afterwards every runtime of the host is in ``running`` or will be
    refused. Then wait up to ``wait`` seconds for the running
    ones to end (the guard's own reconcile sees them go), and with ``stop`` stop those still running
    (graceful, end reason ``host-update``).
    """
    if not lab.lock.acquire(lab.config.lock_timeout):
        raise files.FileError(f"the guard lock {lab.config.lock} is held; try again in a minute")
    try:
        created = set_drain(lab.config.drain_file, reason)
    finally:
        lab.lock.release()
    # No start begins after the drain file is set (a start checks it under the lock); those already past that check
    # run their podman run without the lock: they finish first, so that every runtime below is running or gone.
    late = lab.wait_for_starts(lab.config.lock_timeout)
    if late:
        raise files.FileError(f"starts of {', '.join(late)} are still in progress; run the drain again in a minute")
    if not lab.lock.acquire(lab.config.lock_timeout):
        raise files.FileError(f"the guard lock {lab.config.lock} is held; try again in a minute")
    try:
        current = read(lab.config.drain_file)
        message = drain_message(lab.config.host, current.reason if current else reason)
        warned: List[str] = []
        for row in lab.ledger.open_runtimes():
            user = lab.config.users.get(row.user)
            if user is None:
                continue
            delivered = False
            with contextlib.suppress(OSError, files.FileError):
                files.write_user_file(user.home, user.uid, user.gid, NOTICE_DIR, NOTICE_FILE, message + "\n")
                delivered = True
            if lab.engine.notify(row.container, user.uid, user.gid, message):
                delivered = True
            if delivered:
                warned.append(row.user)
                lab.ledger.record_event(now, row.id, row.user, runtime_status.DRAIN_WARNED, lab.actor, message=message)
                runtime_status.publish(lab, row, now)  # her JupyterLab shows it too
        running = _running(lab)
    finally:
        lab.lock.release()
    before = {r["user"] for r in running}
    deadline = clock() + max(0.0, wait)
    while running and clock() < deadline:
        sleep(min(poll, max(0.0, deadline - clock())))
        if lab.lock.acquire(lab.config.lock_timeout):
            try:
                lab.reconcile(clock(), RunReport())  # closes the rows of runtimes that ended by themselves
            finally:
                lab.lock.release()
        running = _running(lab)
    stopped: List[str] = []
    if stop:
        for entry in running:
            if lab.stop(entry["user"], STOP_REASON)["stopped"]:
                stopped.append(entry["user"])
        running = _running(lab)
    return {
        "drained": True,
        "created": created,
        "drain_file": lab.config.drain_file,
        "now": format_iso(now),
        "warned": warned,
        "finished": sorted(before - {r["user"] for r in running} - set(stopped)),
        "stopped": stopped,
        "running": running,
    }
