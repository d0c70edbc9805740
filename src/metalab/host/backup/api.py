"""What metalab-backup does, as functions: the CLI and the broker (a user's snapshots and restores) call these.

Every function raises BackupError whose ``code`` is failure, bad-input, refused or busy; failures of the repository
are recorded in state_dir/status.json (last_error) for status, doctor and the metrics.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from metalab.host.backup import catalog, state
from metalab.host.backup import restore as restore_mod
from metalab.host.backup.config import Config, load_config
from metalab.host.backup.errors import BackupError
from metalab.host.backup.restic import Restic

__all__ = [
    "BackupError",
    "Config",
    "load_config",
    "init",
    "run",
    "check",
    "status",
    "snapshots",
    "restore",
    "restore_host",
]


def init(cfg: Config) -> Dict[str, Any]:
    """Initialise the repository when it does not exist yet: {"initialized": true} only when it did."""
    restic = Restic(cfg, timeout=600)
    try:
        restic.run(["cat", "config"])
        return {"initialized": False, "repository": cfg.public_repository()}
    except BackupError as exc:
        if "does not exist" not in exc.message:
            raise catalog.recorded(cfg, "init", time.time(), exc) from None
    try:
        restic.run(["init"])
    except BackupError as exc:
        raise catalog.recorded(cfg, "init", time.time(), exc) from None
    return {"initialized": True, "repository": cfg.public_repository()}


def run(cfg: Config, now: Optional[float] = None) -> Dict[str, Any]:
    """One backup of homes_root, then forget --prune with the keep policy; busy when one already runs."""
    now = time.time() if now is None else now
    with state.run_lock(cfg):
        restic = Restic(cfg)
        started = time.monotonic()
        try:
            # 3: a snapshot was made but some files could not be read (a file removed meanwhile): still a backup.
            backup = ["backup", "--json", "--host", cfg.host, "--tag", catalog.TAG, "--exclude", cfg.staging_root]
            lines = restic.json_lines(
                [*backup, cfg.homes_root],
                ok_codes=(0, 3),
            )
            summary = next((x for x in lines if isinstance(x, dict) and x.get("message_type") == "summary"), None)
            if not summary or not summary.get("snapshot_id"):
                raise BackupError("restic backup finished without a snapshot (see the journal of metalab-backup)")
            elapsed = time.monotonic() - started
            # restic 0.14's summary names the snapshot by its short id; status shows the full one.
            full_id = next(
                (s["id"] for s in catalog.list_snapshots(restic, cfg) if s["id"].startswith(summary["snapshot_id"])),
                summary["snapshot_id"],
            )
            forget = ["forget", "--prune", "--host", cfg.host, "--tag", catalog.TAG]
            for kind, count in sorted(cfg.keep.items()):
                forget += [f"--keep-{kind}", str(count)]
            if cfg.keep:
                restic.run(forget)
        except BackupError as exc:
            raise catalog.recorded(cfg, "run", now, exc) from None
        finished = time.time()
        snapshot = {
            "id": full_id,
            "time": state.iso(now),
            "size_bytes": int(summary.get("total_bytes_processed") or 0),
        }
        result = {
            "snapshot": snapshot,
            "files": int(summary.get("total_files_processed") or 0),
            "added_bytes": int(summary.get("data_added") or 0),
            "backup_seconds": round(elapsed, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        }
        state.update_state(
            cfg, last_snapshot=snapshot, last_success=state.iso(finished), last_success_epoch=finished,
            last_error=None, last_run=result,
        )  # fmt: skip
        state.write_metrics(cfg, finished)
        return result


def check(cfg: Config, now: Optional[float] = None) -> Dict[str, Any]:
    """restic check (structure, not every data blob); the result goes to status (last_check)."""
    now = time.time() if now is None else now
    with state.run_lock(cfg):
        try:
            Restic(cfg).run(["check"])
            ok, message = True, "no errors were found"
        except BackupError as exc:
            ok, message = False, exc.message
            state.update_state(cfg, last_check={"time": state.iso(now), "ok": False, "message": message})
            raise catalog.recorded(cfg, "check", now, exc) from None
        state.update_state(cfg, last_check={"time": state.iso(now), "ok": ok, "message": message})
        state.write_metrics(cfg, now)
        return {"ok": ok, "message": message}


def status(cfg: Config, now: Optional[float] = None) -> Dict[str, Any]:
    return state.status(cfg, time.time() if now is None else now)


def snapshots(cfg: Config, user: str) -> List[Dict[str, Any]]:
    """The snapshots holding her home, newest first: [{"id", "short_id", "time"}]; nothing else of the repository."""
    entry = catalog.user_of(cfg, user)
    return [{"id": s["id"], "short_id": s["short_id"], "time": s["time"]}
            for s in catalog.host_snapshots(cfg) if catalog.holds(s, entry.home)]  # fmt: skip


def restore(
    cfg: Config, user: str, snapshot: Optional[str] = None, before: Optional[str] = None, path: Optional[str] = None
) -> Dict[str, Any]:
    """Restore her home (or ``path`` in it) into a new <home>/restored/<stamp>-<short_id>/; see restore.py."""
    return restore_mod.restore_user(cfg, user, snapshot=snapshot, before=before, path=path)


def restore_host(cfg: Config, snapshot: Optional[str] = None) -> Dict[str, Any]:
    return restore_mod.restore_host(cfg, snapshot=snapshot)
