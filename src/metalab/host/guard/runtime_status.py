"""Her runtime's status, for JupyterLab: ``metalab-status.json`` in her socket directory (issue 19, contract 2).

The guard writes it at start, on every guard run and when it warns; the runtime sees the directory at
CONTAINER_SOCKDIR, and the metalab server extension in the image serves the file to her JupyterLab page (status bar
and notifications). It holds every key of ``Lab._describe`` for her running runtime, plus ``home`` (her line of the
usage file, or null), ``warning`` (the newest warning the guard sent this runtime, or null) and ``updated``.

The directory is hers (her runtime writes its socket there), so the file is written like notices in her home: the
directory opened with O_NOFOLLOW, a fresh temporary name created with O_EXCL|O_NOFOLLOW and renamed into place, so a
link she planted is replaced, never written through. The file is root's, mode 0644: she reads it, the guard owns it.
Writing it never fails an operation: a problem is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from metalab.host.guard.engine import CONTAINER_SOCKDIR
from metalab.host.guard.ledger import Ledger, Runtime
from metalab.host.guard.policy import format_iso

if TYPE_CHECKING:  # only for the annotations: sessions imports this module
    from metalab.host.guard.sessions import Lab

log = logging.getLogger("metalab.guard")

STATUS_FILE = "metalab-status.json"
# Where her runtime (and the server extension in the image) finds it.
CONTAINER_STATUS_PATH = f"{CONTAINER_SOCKDIR}/{STATUS_FILE}"
# Contract 1 of issue 19: {"<user>": {"used_bytes", "limit_bytes", "measured_at"}}, written by
# `metalab-guard home-usage --write`; this is the default of the guard config's usage.file.
USAGE_FILE = "/var/lib/metalab/usage.json"
# Ledger events that are warnings she sees: the guard's before a stop (limit, budget), a drain's (an update comes).
DRAIN_WARNED = "drain-warned"
WARNING_EVENTS = ("warned", DRAIN_WARNED)
# A usage file bigger than this is not read (it holds one short line per lab user).
USAGE_FILE_MAX_BYTES = 4 * 1024 * 1024


def home_usage(user: str, usage_file: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Her line of the usage file, or None (no file yet, unreadable, or no valid line for her)."""
    path = USAGE_FILE if usage_file is None else usage_file
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read(USAGE_FILE_MAX_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("usage file %s: %s", path, exc)
        return None
    entry = data.get(user) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        return None
    used, limit, measured = entry.get("used_bytes"), entry.get("limit_bytes"), entry.get("measured_at")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (used, limit)):
        return None
    return {"used_bytes": used, "limit_bytes": limit, "measured_at": measured if isinstance(measured, str) else None}


def newest_warning(ledger: Ledger, runtime_id: int) -> Optional[Dict[str, Any]]:
    """The newest warning the guard sent this runtime (from the ledger's events: limit, budget or drain), or None."""
    events = [e for e in ledger.events(runtime_id) if e["action"] in WARNING_EVENTS]
    if not events:
        return None
    last = events[-1]
    return {"message": str(last["detail"].get("message", "")), "at": format_iso(float(last["ts"]))}


def build(
    described: Dict[str, Any], home: Optional[Dict[str, Any]], warning: Optional[Dict[str, Any]], now: float
) -> Dict[str, Any]:
    out = dict(described)
    out.update({"home": home, "warning": warning, "updated": format_iso(now)})
    return out


def write(directory: str, content: Dict[str, Any]) -> str:
    """Write DIRECTORY/metalab-status.json (0644, the writer's) without following any link planted there."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        tmp = f".{STATUS_FILE}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(content, fh, indent=1, sort_keys=True)
                fh.write("\n")
                os.fchmod(fh.fileno(), 0o644)
            os.replace(tmp, STATUS_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)
    return os.path.join(directory, STATUS_FILE)


def publish(lab: Lab, row: Runtime, now: float, history: Optional[Dict[Tuple[str, str], List[Runtime]]] = None) -> None:
    """Write her status file for ROW (her open runtime); a failure is logged, never raised."""
    try:
        described = lab._describe(row, lab._history(now) if history is None else history, now)
        content = build(described, home_usage(row.user, lab.config.usage.file), newest_warning(lab.ledger, row.id), now)
        write(os.path.join(lab.config.runtime.socket_root, row.user), content)
    except Exception as exc:  # the status file is a convenience: never keep the guard from enforcing for it
        log.warning("status file for %s: %s", row.user, exc)


def publish_all(lab: Lab, now: float) -> None:
    """Every running runtime's status file (the end of each guard run)."""
    history = lab._history(now)
    for row in lab.ledger.open_runtimes():
        if row.state == "running":
            publish(lab, row, now, history)
