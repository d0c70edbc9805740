"""This host's snapshots in the repository, and picking the one a restore asks for."""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List, Optional

from metalab.host.backup import state
from metalab.host.backup.config import Config, User
from metalab.host.backup.errors import BackupError
from metalab.host.backup.restic import Restic

TAG = "metalab"
SNAPSHOT_ID = re.compile(r"[0-9a-f]{8,64}\Z")


def recorded(cfg: Config, operation: str, now: float, exc: BackupError) -> BackupError:
    if exc.code == "failure":
        state.record_error(cfg, now, exc.message, operation)
        state.write_metrics(cfg, now)
    return exc


def host_snapshots(cfg: Config) -> List[Dict[str, Any]]:
    """This host's metalab snapshots, newest first: [{"id", "short_id", "time", "epoch", "paths"}]."""
    now = time.time()
    try:
        return list_snapshots(Restic(cfg, timeout=300), cfg)
    except BackupError as exc:
        raise recorded(cfg, "snapshots", now, exc) from None


def list_snapshots(restic: Restic, cfg: Config) -> List[Dict[str, Any]]:
    raw = restic.json_lines(["snapshots", "--json", "--host", cfg.host, "--tag", TAG])
    items = raw[0] if raw and isinstance(raw[0], list) else []
    out = []
    for snap in items:
        try:
            epoch = state.parse_time(snap["time"])
        except (KeyError, ValueError):
            continue
        out.append({"id": snap["id"], "short_id": snap.get("short_id") or snap["id"][:8], "time": state.iso(epoch),
                    "epoch": epoch, "paths": list(snap.get("paths") or [])})  # fmt: skip
    out.sort(key=lambda s: s["epoch"], reverse=True)
    return out


def user_of(cfg: Config, user: str) -> User:
    entry = cfg.users.get(str(user))
    if entry is None:
        raise BackupError(f"unknown user {user!r}: not a lab user of host {cfg.host}", "bad-input")
    return entry


def holds(snapshot: Dict[str, Any], home: str) -> bool:
    return any(home == p or home.startswith(p.rstrip("/") + "/") for p in snapshot["paths"])


def pick_snapshot(cfg: Config, snapshot: Optional[str], before: Optional[str], home: Optional[str]) -> Dict[str, Any]:
    if snapshot is not None and before is not None:
        raise BackupError("give --snapshot or --before, not both", "bad-input")
    if snapshot is not None and not SNAPSHOT_ID.match(str(snapshot)):
        raise BackupError(f"snapshot {snapshot!r}: expected a snapshot id (8 to 64 hex digits)", "bad-input")
    limit = None
    if before is not None:
        try:
            limit = state.parse_time(str(before))
        except ValueError as exc:
            raise BackupError(f"--before: {exc}", "bad-input") from None
    found = [s for s in host_snapshots(cfg) if home is None or holds(s, home)]
    if snapshot is not None:
        found = [s for s in found if s["id"].startswith(str(snapshot))]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise BackupError(f"{what} snapshot of host {cfg.host} matches {snapshot!r} (see snapshots)", "bad-input")
    elif limit is not None:
        found = [s for s in found if s["epoch"] <= limit]
        if not found:
            raise BackupError(f"no snapshot of host {cfg.host} before {before}", "bad-input")
    elif not found:
        raise BackupError(f"there is no snapshot of host {cfg.host} yet (run a backup first)", "failure")
    return found[0]
