"""The ledger: SQLite in WAL mode, one row per runtime plus an audit trail of events.

Row states: ``starting`` (inserted before the container is created) -> ``running`` -> ``stopping`` (phase one of a
stop: the reason is recorded before the container is touched) -> ``ended`` (phase two: ``ended`` and ``end_reason``
set). Every state change is one transaction and a guarded UPDATE (``WHERE state = ...``), so a process killed at
any point leaves a row that the next guard run can finish, and no row is ever closed twice. A partial unique index
makes a second open row for a user (or a second open row on the same GPU) impossible.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS runtimes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user             TEXT    NOT NULL,
    host             TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('cpu', 'gpu')),
    gpu              INTEGER,
    container        TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('starting', 'running', 'stopping', 'ended')),
    started          REAL    NOT NULL,
    ended            REAL,
    end_reason       TEXT,
    stop_reason      TEXT,
    stop_requested   REAL,
    extended_seconds INTEGER NOT NULL DEFAULT 0,
    warnings_sent    TEXT    NOT NULL DEFAULT '[]',
    CHECK ((state = 'ended') = (ended IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS runtimes_one_open_per_user ON runtimes (user) WHERE ended IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS runtimes_one_open_per_gpu ON runtimes (host, gpu)
    WHERE ended IS NULL AND gpu IS NOT NULL;
CREATE INDEX IF NOT EXISTS runtimes_user_kind_ended ON runtimes (user, kind, ended);
CREATE INDEX IF NOT EXISTS runtimes_ended ON runtimes (ended);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         REAL    NOT NULL,
    runtime_id INTEGER REFERENCES runtimes (id),
    user       TEXT,
    action     TEXT    NOT NULL,
    actor      TEXT,
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_runtime ON events (runtime_id);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

OPEN_STATES = ("starting", "running", "stopping")


class LedgerError(Exception):
    pass


@dataclass(frozen=True)
class Runtime:
    id: int
    user: str
    host: str
    kind: str
    gpu: Optional[int]
    container: str
    state: str
    started: float
    ended: Optional[float]
    end_reason: Optional[str]
    stop_reason: Optional[str]
    stop_requested: Optional[float]
    extended_seconds: int
    warnings_sent: List[int]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Runtime:
        return cls(
            id=row["id"],
            user=row["user"],
            host=row["host"],
            kind=row["kind"],
            gpu=row["gpu"],
            container=row["container"],
            state=row["state"],
            started=row["started"],
            ended=row["ended"],
            end_reason=row["end_reason"],
            stop_reason=row["stop_reason"],
            stop_requested=row["stop_requested"],
            extended_seconds=row["extended_seconds"],
            warnings_sent=[int(x) for x in json.loads(row["warnings_sent"] or "[]")],
        )


class Ledger:
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below is an explicit BEGIN IMMEDIATE.
        self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"ledger {path}: could not switch to WAL mode (got {mode})")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as cur:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        with suppress(OSError):
            os.chmod(path, 0o600)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    # -- queries ---------------------------------------------------------------------------------------------

    def get(self, runtime_id: int) -> Optional[Runtime]:
        row = self.conn.execute("SELECT * FROM runtimes WHERE id = ?", (runtime_id,)).fetchone()
        return None if row is None else Runtime.from_row(row)

    def open_runtimes(self) -> List[Runtime]:
        rows = self.conn.execute("SELECT * FROM runtimes WHERE ended IS NULL ORDER BY id").fetchall()
        return [Runtime.from_row(r) for r in rows]

    def open_for_user(self, user: str) -> Optional[Runtime]:
        row = self.conn.execute("SELECT * FROM runtimes WHERE user = ? AND ended IS NULL", (user,)).fetchone()
        return None if row is None else Runtime.from_row(row)

    def sessions_since(self, since: float, users: Optional[Sequence[str]] = None) -> List[Runtime]:
        """Rows that were open at some point after ``since`` (open rows included)."""
        sql = "SELECT * FROM runtimes WHERE (ended IS NULL OR ended > ?)"
        params: List[Any] = [since]
        if users is not None:
            sql += f" AND user IN ({','.join('?' * len(users))})"
            params.extend(users)
        return [Runtime.from_row(r) for r in self.conn.execute(sql + " ORDER BY id", params).fetchall()]

    def events(self, runtime_id: Optional[int] = None, action: Optional[str] = None) -> List[Dict[str, Any]]:
        sql = "SELECT * FROM events WHERE 1 = 1"
        params: List[Any] = []
        if runtime_id is not None:
            sql += " AND runtime_id = ?"
            params.append(runtime_id)
        if action is not None:
            sql += " AND action = ?"
            params.append(action)
        rows = self.conn.execute(sql + " ORDER BY id", params).fetchall()
        return [dict(r, detail=json.loads(r["detail"])) for r in rows]

    def meta(self, key: str) -> Optional[str]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- state changes (each one transaction) ---------------------------------------------------------------

    @staticmethod
    def _event(
        cur: sqlite3.Cursor,
        ts: float,
        runtime_id: Optional[int],
        user: Optional[str],
        action: str,
        actor: Optional[str],
        detail: Optional[Dict[str, Any]] = None,
    ) -> None:
        cur.execute(
            "INSERT INTO events (ts, runtime_id, user, action, actor, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (ts, runtime_id, user, action, actor, json.dumps(detail or {}, sort_keys=True)),
        )

    def record_event(
        self,
        ts: float,
        runtime_id: Optional[int],
        user: Optional[str],
        action: str,
        actor: Optional[str],
        **detail: Any,
    ) -> None:
        with self.transaction() as cur:
            self._event(cur, ts, runtime_id, user, action, actor, detail)

    def insert_starting(
        self, user: str, host: str, kind: str, gpu: Optional[int], container: str, now: float, actor: str
    ) -> Runtime:
        """Phase one of a start. Raises LedgerError if the user (or the GPU) already has an open row."""
        try:
            with self.transaction() as cur:
                cur.execute(
                    "INSERT INTO runtimes (user, host, kind, gpu, container, state, started)"
                    " VALUES (?, ?, ?, ?, ?, 'starting', ?)",
                    (user, host, kind, gpu, container, now),
                )
                runtime_id = cur.lastrowid
                self._event(cur, now, runtime_id, user, "start-requested", actor, {"kind": kind, "gpu": gpu})
        except sqlite3.IntegrityError as exc:
            raise LedgerError(f"{user} already has an open runtime (or GPU {gpu} is taken): {exc}") from None
        runtime = self.get(int(runtime_id or 0))
        assert runtime is not None
        return runtime

    def _transition(
        self, sql: str, params: tuple, runtime_id: int, action: str, now: float, actor: str, detail: Dict[str, Any]
    ) -> bool:
        """Run one conditional UPDATE of a runtime's row; when it changed the row, record ``action`` in the same
        transaction. False when the row was not in a state the UPDATE accepts."""
        with self.transaction() as cur:
            cur.execute(sql, params)
            changed = cur.rowcount == 1
            if changed:
                row = cur.execute("SELECT user FROM runtimes WHERE id = ?", (runtime_id,)).fetchone()
                self._event(cur, now, runtime_id, row["user"], action, actor, detail)
        return changed

    def mark_running(self, runtime_id: int, now: float, actor: str, **detail: Any) -> bool:
        return self._transition(
            "UPDATE runtimes SET state = 'running' WHERE id = ? AND state = 'starting'",
            (runtime_id,),
            runtime_id,
            "started",
            now,
            actor,
            detail,
        )

    def mark_stopping(self, runtime_id: int, reason: str, now: float, actor: str) -> bool:
        """Phase one of a stop: record the reason. False if the row was already stopping or ended."""
        return self._transition(
            "UPDATE runtimes SET state = 'stopping', stop_reason = ?, stop_requested = ?"
            " WHERE id = ? AND state IN ('starting', 'running')",
            (reason, now, runtime_id),
            runtime_id,
            "stop-requested",
            now,
            actor,
            {"reason": reason},
        )

    def close_row(
        self, runtime_id: int, reason: Optional[str], ended: float, now: float, actor: str, **detail: Any
    ) -> bool:
        """Close an open row. ``reason`` None = the reason recorded by mark_stopping. False if already closed."""
        with self.transaction() as cur:
            row = cur.execute("SELECT * FROM runtimes WHERE id = ?", (runtime_id,)).fetchone()
            if row is None or row["ended"] is not None:
                return False
            final = reason or row["stop_reason"] or "unknown"
            ended = max(ended, row["started"])
            cur.execute(
                "UPDATE runtimes SET state = 'ended', ended = ?, end_reason = ? WHERE id = ? AND ended IS NULL",
                (ended, final, runtime_id),
            )
            if cur.rowcount != 1:
                return False
            self._event(cur, now, runtime_id, row["user"], "ended", actor, dict(detail, reason=final))
        return True

    def add_extension(self, runtime_id: int, seconds: int, now: float, actor: str) -> Runtime:
        """Record an admin extension; the warnings start over for the new deadline."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE runtimes SET extended_seconds = extended_seconds + ?, warnings_sent = '[]'"
                " WHERE id = ? AND state IN ('starting', 'running')",
                (seconds, runtime_id),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"runtime {runtime_id} is not running")
            row = cur.execute("SELECT * FROM runtimes WHERE id = ?", (runtime_id,)).fetchone()
            self._event(
                cur, now, runtime_id, row["user"], "extended", actor,
                {"seconds": seconds, "total": row["extended_seconds"]},
            )  # fmt: skip
        runtime = self.get(runtime_id)
        assert runtime is not None
        return runtime

    def record_warnings(self, runtime_id: int, offsets: Sequence[int], now: float, actor: str, message: str) -> None:
        with self.transaction() as cur:
            row = cur.execute("SELECT * FROM runtimes WHERE id = ? AND ended IS NULL", (runtime_id,)).fetchone()
            if row is None:
                return
            sent = sorted(set(json.loads(row["warnings_sent"])) | set(offsets), reverse=True)
            cur.execute("UPDATE runtimes SET warnings_sent = ? WHERE id = ?", (json.dumps(sent), runtime_id))
            self._event(
                cur, now, runtime_id, row["user"], "warned", actor, {"offsets": list(offsets), "message": message}
            )
