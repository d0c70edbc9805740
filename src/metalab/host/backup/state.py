"""state_dir/status.json (what status, doctor and the metrics read), the run lock, restic's time stamps, and the
Prometheus textfile."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional

from metalab.host.backup.config import Config
from metalab.host.backup.errors import BackupError

BUSY = "another backup is running on this host"
# restic's times: 2026-11-30T11:41:41.928899359Z or +01:00; fromisoformat of Python 3.9 reads neither.
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?\s*(Z|[+-]\d\d:?\d\d)?\Z", re.IGNORECASE
)


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO time (restic's, or a user's --before); no zone means UTC."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not an ISO date/time (e.g. 2026-11-30T08:00Z)")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = timezone.utc
    if zone and zone.upper() != "Z":
        digits = zone.replace(":", "")
        offset = timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))
        tz = timezone(offset if digits[0] == "+" else -offset)
    moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz)
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or (os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022)):
        raise BackupError(f"{path} must be a directory owned and writable by root only", "failure")


def status_path(cfg: Config) -> str:
    return os.path.join(cfg.state_dir, "status.json")


def read_state(cfg: Config) -> Dict[str, Any]:
    try:
        with open(status_path(cfg), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(cfg: Config, data: Dict[str, Any]) -> None:
    _private_dir(cfg.state_dir)
    path = status_path(cfg)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def update_state(cfg: Config, **changes: Any) -> Dict[str, Any]:
    data = read_state(cfg)
    data.update(changes)
    write_state(cfg, data)
    return data


def record_error(cfg: Config, now: float, message: str, operation: str) -> None:
    """Keep a failure where status, doctor and the metrics see it (never raises: the original error matters more)."""
    with contextlib.suppress(OSError, BackupError):
        update_state(cfg, last_error={"time": iso(now), "epoch": now, "message": message, "operation": operation})


@contextlib.contextmanager
def run_lock(cfg: Config) -> Iterator[None]:
    """One run, check or restore at a time on a host (flock on state_dir/lock); busy (75) when one holds it."""
    _private_dir(cfg.state_dir)
    fd = os.open(os.path.join(cfg.state_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise BackupError(BUSY, "busy") from None
            raise
        yield
    finally:
        os.close(fd)


def status(cfg: Config, now: float) -> Dict[str, Any]:
    data = read_state(cfg)
    last_success = data.get("last_success_epoch")
    age = None if last_success is None else max(0, int(now - float(last_success)))
    error = data.get("last_error")
    return {
        "host": cfg.host,
        "repository": cfg.public_repository(),
        "last_snapshot": data.get("last_snapshot"),
        "age_s": age,
        "last_success": data.get("last_success"),
        "last_check": data.get("last_check"),
        "last_error": {"time": error.get("time"), "message": error.get("message")} if isinstance(error, dict) else None,
        "stale": age is None or age > cfg.max_age_s,
        "max_age_s": cfg.max_age_s,
    }


def prometheus(cfg: Config, now: float) -> str:
    """The backup figures in node_exporter's textfile format (beside the guard's metalab.prom)."""
    data = read_state(cfg)
    info = status(cfg, now)
    lines: List[str] = []
    host = cfg.host.replace("\\", "\\\\").replace('"', '\\"')

    def metric(name: str, help_text: str, value: Optional[float]) -> None:
        if value is None:
            return
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f'{name}{{host="{host}"}} {value:.0f}'])

    metric(
        "metalab_backup_last_success_timestamp_seconds", "Time of the last good backup.", data.get("last_success_epoch")
    )
    metric(
        "metalab_backup_age_seconds", "Seconds since the last good backup, when this file was written.", info["age_s"]
    )
    metric("metalab_backup_stale", "1 when there is no good backup within max_age_s.", 1.0 if info["stale"] else 0.0)
    metric("metalab_backup_max_age_seconds", "Oldest a last good backup may be.", float(cfg.max_age_s))
    snapshot = data.get("last_snapshot") or {}
    metric(
        "metalab_backup_last_snapshot_size_bytes",
        "Bytes of the homes in the last snapshot.",
        snapshot.get("size_bytes"),
    )
    check = data.get("last_check")
    metric(
        "metalab_backup_last_check_ok",
        "1 when the last repository check passed.",
        None if not isinstance(check, dict) else (1.0 if check.get("ok") else 0.0),
    )
    error = data.get("last_error")
    failing = isinstance(error, dict) and float(error.get("epoch", 0)) >= float(data.get("last_success_epoch") or 0)
    metric(
        "metalab_backup_failing",
        "1 when the last backup operation failed after the last success.",
        1.0 if failing else 0.0,
    )
    return "\n".join(lines) + "\n"


def write_metrics(cfg: Config, now: float) -> None:
    """Write the textfile when its directory exists (node_exporter installed); never fails the operation."""
    path = cfg.metrics_path
    if not path or not os.path.isdir(os.path.dirname(path)):
        return
    with contextlib.suppress(OSError):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(prometheus(cfg, now))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
