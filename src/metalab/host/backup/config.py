"""backup.json (rendered by the backup role): where the repository is, its secrets' files, the homes and the users."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from metalab.host.backup.errors import BackupError

DEFAULT_CONFIG = "/etc/metalab/backup.json"
CONFIG_ENV = "METALAB_BACKUP_CONFIG"
DEFAULT_METRICS = "/var/lib/prometheus/node-exporter/metalab-backup.prom"
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
KEEP_KINDS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class User:
    name: str
    login: str
    home: str
    quota_bytes: Optional[int]


@dataclass(frozen=True)
class Config:
    host: str
    repository: str
    password_file: str
    env_file: Optional[str]
    homes_root: str
    state_dir: str
    max_age_s: int
    keep: Dict[str, int] = field(default_factory=dict)
    users: Dict[str, User] = field(default_factory=dict)
    ssh_key: Optional[str] = None
    known_hosts: Optional[str] = None
    metrics_path: Optional[str] = DEFAULT_METRICS
    restic: str = "restic"

    @property
    def staging_root(self) -> str:
        """Root-only staging directory on the homes filesystem (a rename from there into a home is atomic)."""
        return os.path.join(self.homes_root, ".metalab-restore")

    def public_repository(self) -> str:
        """The repository string without credentials (an s3/rest URL may carry user:password@)."""
        return re.sub(r"(://)[^/@]*:[^/@]*@", r"\1***@", self.repository)


def _str(data: Mapping[str, Any], key: str, path: str, default: Optional[str] = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise BackupError(f"config file {path}: {key} must be a non-empty string", "failure")
    return value


def _abs(data: Mapping[str, Any], key: str, path: str, default: Optional[str] = None) -> str:
    value = _str(data, key, path, default)
    if not os.path.isabs(value):
        raise BackupError(f"config file {path}: {key} must be an absolute path, not {value!r}", "failure")
    return os.path.normpath(value)


def parse_config(data: Any, path: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise BackupError(f"config file {path}: expected a JSON object", "failure")
    homes_root = _abs(data, "homes_root", path)
    users: Dict[str, User] = {}
    raw_users = data.get("users", {})
    if not isinstance(raw_users, dict):
        raise BackupError(f"config file {path}: users must be an object keyed by user name", "failure")
    for name, entry in raw_users.items():
        if not USER_NAME.match(str(name)) or not isinstance(entry, dict):
            raise BackupError(f"config file {path}: users.{name}: bad user name or entry", "failure")
        home = os.path.normpath(str(entry.get("home", "")))
        if not os.path.isabs(home) or os.path.dirname(home) != homes_root:
            raise BackupError(
                f"config file {path}: users.{name}.home {home!r} is not a directory of {homes_root}", "failure"
            )
        quota = entry.get("quota_bytes")
        if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota < 0):
            raise BackupError(
                f"config file {path}: users.{name}.quota_bytes must be a number of bytes or null", "failure"
            )
        users[str(name)] = User(str(name), str(entry.get("login") or name), home, quota or None)
    keep_raw = data.get("keep", {}) or {}
    if not isinstance(keep_raw, dict) or any(
        k not in KEEP_KINDS or not isinstance(v, int) or isinstance(v, bool) or v < 0 for k, v in keep_raw.items()
    ):
        raise BackupError(f"config file {path}: keep must map {'/'.join(KEEP_KINDS)} to counts", "failure")
    max_age = data.get("max_age_s", 26 * 3600)
    if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age <= 0:
        raise BackupError(f"config file {path}: max_age_s must be a positive number of seconds", "failure")
    env_file = data.get("env_file")
    ssh_key = data.get("ssh_key")
    known_hosts = data.get("known_hosts") or (
        os.path.join(os.path.dirname(ssh_key), "known_hosts") if ssh_key else None
    )
    metrics_path = data.get("metrics_path", DEFAULT_METRICS)
    return Config(
        host=_str(data, "host", path),
        repository=_str(data, "repository", path),
        password_file=_abs(data, "password_file", path),
        env_file=str(env_file) if env_file else None,
        homes_root=homes_root,
        state_dir=_abs(data, "state_dir", path, "/var/lib/metalab/backup"),
        max_age_s=max_age,
        keep={k: v for k, v in keep_raw.items() if v > 0},
        users=users,
        ssh_key=str(ssh_key) if ssh_key else None,
        known_hosts=str(known_hosts) if known_hosts else None,
        metrics_path=str(metrics_path) if metrics_path else None,
        restic=str(data.get("restic") or "restic"),
    )


def load_config(path: Optional[str] = None) -> Config:
    path = path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise BackupError(f"config file {path} not found (set --config or {CONFIG_ENV})", "failure") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"config file {path}: invalid JSON: {exc}", "failure") from None
    except OSError as exc:
        raise BackupError(f"config file {path}: {exc.strerror}", "failure") from None
    return parse_config(data, path)
