"""The broker's backup operations: a user's own snapshots and restores of her own folders (issue 21).

``backup_snapshots`` answers ``{user, configured, snapshots: [{id, short_id, time}]}`` (newest first) and
``backup_restore`` (fields ``snapshot``: an id or short id of one of her snapshots, default the newest; ``path``: a
folder relative to her home, empty for the whole home) answers ``{user, snapshot, path, target, folder, files,
bytes}`` where ``folder`` is the new dated folder relative to her home (``restored/<time>-<short id>``).

Both act for the ticket's user only and call ``metalab.host.backup.api`` (the host side of metalab-backup) with the
config the broker's ``backup_config`` names. A user sees snapshot ids and times and her own files' counts, never the
repository, its password or another home: paths are checked here (relative, no ``..``) before the api sees them, and
a failure (repository unreachable, wrong password, ...) reaches her as a plain "cannot be used right now" while the
broker's log keeps the details for the admin. Error codes: ``bad-request`` (bad path or snapshot), ``refused`` (the
restore does not fit her quota), ``busy`` (a restore of hers or a backup holds the lock), ``failure``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

from metalab.host.broker.errors import ApiError

log = logging.getLogger("metalab.broker")

SNAPSHOT_ID = re.compile(r"\A[0-9a-f]{4,64}\Z")
MAX_PATH = 4096
CODES = {"bad-input": "bad-request", "refused": "refused", "busy": "busy"}
UNUSABLE = "the backup repository cannot be used right now; a lab admin can see why (metalab-backup status)"


def backup_api() -> Any:
    """metalab.host.backup.api, imported when first needed (hosts without backups never load it)."""
    return importlib.import_module("metalab.host.backup.api")


def clean_path(raw: Any) -> Optional[str]:
    """A folder relative to the user's home, normalised (``a//b/./c/`` -> ``a/b/c``); None for the whole home."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_PATH:
        raise ApiError("bad-request", "path: expected the name of a folder inside your home")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ApiError("bad-request", "path: control characters are not allowed")
    if raw.startswith(("/", "~")):
        raise ApiError(
            "bad-request", f"path: give a folder relative to your home (like projects/thesis), not {raw[:80]!r}"
        )
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ApiError("bad-request", "path: '..' is not allowed; give a folder inside your home")
    return "/".join(parts) or None


def _field(obj: Any, key: str) -> Any:
    """obj[key] or obj.key (the api's config may be a dict or an object); None when it has neither."""
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _public(row: Any) -> Dict[str, str]:
    """Only what a user may see of a snapshot: its id, short id and time."""
    ident = str(_field(row, "id") or "")
    return {"id": ident, "short_id": str(_field(row, "short_id") or ident[:8]), "time": str(_field(row, "time") or "")}


class BackupOps:
    def __init__(self, config_path: Optional[str], api: Optional[Callable[[], Any]] = None) -> None:
        self.config_path = config_path
        self._api = api  # None: backup_api(), looked up when needed
        self._restoring: Set[str] = set()  # users with a restore in flight
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.config_path)

    @contextlib.contextmanager
    def _errors(self, api: Any, user: str, what: str, cfg: Any = None) -> Iterator[None]:
        """The api's errors as the broker's codes; the repository's name never reaches the user."""
        try:
            yield
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the user gets a clear message, the log the rest
            code = getattr(exc, "code", None) if isinstance(exc, api.BackupError) else None
            message = str(exc)
            if code in CODES:
                for secret in (_field(cfg, "repository"), _field(cfg, "password_file"), _field(cfg, "env_file")):
                    if isinstance(secret, str) and secret:
                        message = message.replace(secret, "<repository>")
                log.info("%s for %s: %s: %s", what, user, code, message)
                raise ApiError(CODES[code], message) from None
            log.error("%s for %s failed: %s: %s", what, user, type(exc).__name__, message)
            raise ApiError("failure", f"{what} failed: {UNUSABLE}") from None

    def _load(self, user: str, what: str) -> Any:
        api = (self._api or backup_api)()
        with self._errors(api, user, what):
            return api, api.load_config(self.config_path)

    def _list(self, api: Any, cfg: Any, user: str) -> List[Dict[str, str]]:
        with self._errors(api, user, "listing your backups", cfg):
            rows = api.snapshots(cfg, user)
        return [_public(row) for row in rows]

    def snapshots(self, user: str) -> Dict[str, Any]:
        if not self.configured:
            return {"user": user, "configured": False, "snapshots": []}
        api, cfg = self._load(user, "listing your backups")
        return {"user": user, "configured": True, "snapshots": self._list(api, cfg, user)}

    def restore(self, user: str, snapshot: Any, raw_path: Any) -> Dict[str, Any]:
        if not self.configured:
            raise ApiError("bad-request", "backups are not set up on this host")
        if snapshot in (None, ""):
            snapshot = None
        elif not isinstance(snapshot, str) or not SNAPSHOT_ID.fullmatch(snapshot):
            raise ApiError("bad-request", "snapshot: expected the id of one of your backups (hex digits)")
        path = clean_path(raw_path)
        with self._lock:
            if user in self._restoring:
                raise ApiError("busy", "a restore of yours is already running; wait until it finishes")
            self._restoring.add(user)
        try:
            api, cfg = self._load(user, "the restore")
            # Only her own snapshots: the id must be one that the api lists for her home.
            mine = self._list(api, cfg, user)
            if not mine:
                raise ApiError("bad-request", "there is no backup of your home yet")
            chosen = mine[0]
            if snapshot is not None:
                found = [s for s in mine if s["id"] == snapshot or s["id"].startswith(snapshot)]
                if len(found) != 1:
                    raise ApiError("bad-request", f"snapshot {snapshot}: not one of your backups")
                chosen = found[0]
            log.info("restore for %s: snapshot %s, path %s", user, chosen["short_id"], path or "(whole home)")
            with self._errors(api, user, "the restore", cfg):
                result = api.restore(cfg, user, snapshot=chosen["id"], path=path)
        finally:
            with self._lock:
                self._restoring.discard(user)
        target = str(_field(result, "target") or "")
        return {
            "user": user,
            "snapshot": chosen,
            "path": path or "",
            "target": target,
            "folder": self._folder(cfg, user, target),
            "files": int(_field(result, "files") or 0),
            "bytes": int(_field(result, "bytes") or 0),
        }

    @staticmethod
    def _folder(cfg: Any, user: str, target: str) -> str:
        """The dated folder relative to her home (``restored/2026-...``)."""
        home = _field(_field(_field(cfg, "users") or {}, user) or {}, "home")
        clean = target.rstrip("/")
        if isinstance(home, str) and home and clean.startswith(home.rstrip("/") + "/"):
            return os.path.relpath(clean, home)
        head, sep, tail = clean.rpartition("/restored/")
        return f"restored/{tail}" if sep else os.path.basename(clean)
