"""The host side of `labctl users move` besides the archive: the guard ledger rows that follow a user, and the
target home's preparation.

ledger-export USER: her ended runtime rows and their events as JSON (refused while she has an open row).
ledger-import FILE: those rows into this host's ledger, in one transaction, once (a meta key names the move).
ledger-forget FILE: her rows listed in FILE removed from this (the old) host's ledger, in one transaction, only
after the new host holds them; the FILE itself stays beside the archive. Budgets count a user's rows whatever
their ``host`` column says, so after the move they count once, on her new host.

prepare-target HOME: a home the target's accounts role made (nothing but copies of /etc/skel) is emptied, so the
import can take its place; a home with anything else in it is refused (nothing changed).
"""

from __future__ import annotations

import filecmp
import json
import os
import stat
from typing import Any, Dict, List

from metalab.host.guard.ledger import Ledger
from metalab.host.homes.errors import HomesError

FORMAT = "metalab-ledger-rows/1"


def ledger_export(ledger_path: str, user: str, source: str, move_id: str) -> Dict[str, Any]:
    ledger = Ledger(ledger_path)
    try:
        if ledger.open_for_user(user) is not None:
            raise HomesError(f"{user} has an open runtime in {ledger_path}: stop it first", "refused")
        rows = [dict(r) for r in ledger.conn.execute("SELECT * FROM runtimes WHERE user = ? ORDER BY id", (user,))]
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids)) or "NULL"
        events = [
            dict(e)
            for e in ledger.conn.execute(
                f"SELECT * FROM events WHERE user = ? OR runtime_id IN ({marks}) ORDER BY id", (user, *ids)
            )
        ]
    finally:
        ledger.close()
    return {"format": FORMAT, "user": user, "source": source, "move_id": move_id, "runtimes": rows, "events": events}


def load_rows(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as src:
            data = json.load(src)
    except (OSError, ValueError) as exc:
        raise HomesError(f"cannot read {path}: {exc}", "bad-input") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not data.get("user") or not data.get("move_id"):
        raise HomesError(f"{path} is not a ledger rows file ({FORMAT})", "bad-input")
    return data


def _meta_key(data: Dict[str, Any]) -> str:
    return f"moved-in:{data['user']}:{data['move_id']}"


RUNTIME_COLUMNS = [
    "user",
    "host",
    "kind",
    "gpu",
    "container",
    "state",
    "started",
    "ended",
    "end_reason",
    "stop_reason",
    "stop_requested",
    "extended_seconds",
    "warnings_sent",
]


def ledger_import(ledger_path: str, data: Dict[str, Any]) -> Dict[str, Any]:
    """Insert the rows (new ids; events re-pointed) once; a rerun finds the meta key and changes nothing."""
    ledger = Ledger(ledger_path)
    key = _meta_key(data)
    try:
        if ledger.meta(key) is not None:
            return {"imported": False, "already_imported": True, "runtimes": len(data["runtimes"])}
        with ledger.transaction() as cur:
            ids: Dict[int, int] = {}
            for row in data["runtimes"]:
                if row.get("ended") is None:
                    raise HomesError(f"runtime {row.get('id')} of {data['user']} is open: not moved", "refused")
                cols = ",".join(RUNTIME_COLUMNS)
                cur.execute(
                    f"INSERT INTO runtimes ({cols}) VALUES ({','.join('?' * len(RUNTIME_COLUMNS))})",
                    [row.get(c) for c in RUNTIME_COLUMNS],
                )
                ids[int(row["id"])] = int(cur.lastrowid or 0)
            for event in data["events"]:
                old = event.get("runtime_id")
                cur.execute(
                    "INSERT INTO events (ts, runtime_id, user, action, actor, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    (event["ts"], ids.get(old) if old is not None else None, event.get("user"), event["action"],
                     event.get("actor"), event.get("detail") or "{}"),
                )  # fmt: skip
            cur.execute(
                "INSERT INTO events (ts, runtime_id, user, action, actor, detail) VALUES (strftime('%s','now'),"
                " NULL, ?, 'moved-in', 'labctl', ?)",
                (data["user"], json.dumps({"from": data["source"], "move_id": data["move_id"]}, sort_keys=True)),
            )
            cur.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, str(len(ids))))
    finally:
        ledger.close()
    return {"imported": True, "runtimes": len(data["runtimes"]), "events": len(data["events"])}


def ledger_count(ledger_path: str, user: str) -> int:
    ledger = Ledger(ledger_path)
    try:
        return int(ledger.conn.execute("SELECT count(*) FROM runtimes WHERE user = ?", (user,)).fetchone()[0])
    finally:
        ledger.close()


def ledger_forget(ledger_path: str, data: Dict[str, Any]) -> Dict[str, Any]:
    """Remove the rows listed in ``data`` (and their events) from the old host's ledger; a rerun removes none."""
    ledger = Ledger(ledger_path)
    ids = [int(r["id"]) for r in data["runtimes"]]
    events = [int(e["id"]) for e in data["events"]]
    try:
        with ledger.transaction() as cur:
            for chunk in range(0, len(events), 500):
                part = events[chunk : chunk + 500]
                cur.execute(f"DELETE FROM events WHERE id IN ({','.join('?' * len(part))})", part)
            removed = 0
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                cur.execute(
                    "DELETE FROM runtimes WHERE user = ? AND ended IS NOT NULL"
                    f" AND id IN ({','.join('?' * len(part))})",
                    [data["user"], *part],
                )
                removed += cur.rowcount
    finally:
        ledger.close()
    return {"removed": removed}


def _skel_only(home: str, skel: str) -> List[str]:
    """The entries of ``home`` that are not byte-identical copies of ``skel``'s (empty: a fresh account's home)."""
    extra = []
    for dirpath, dirnames, filenames in os.walk(home):
        rel_dir = os.path.relpath(dirpath, home)
        for name in dirnames + filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            mine, theirs = os.path.join(dirpath, name), os.path.join(skel, rel)
            st = os.lstat(mine)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(theirs) or os.path.islink(theirs):
                    extra.append(rel)
            elif (
                not stat.S_ISREG(st.st_mode)
                or not os.path.isfile(theirs)
                or os.path.islink(theirs)
                or not filecmp.cmp(mine, theirs, shallow=False)
            ):
                extra.append(rel)
    return extra


def prepare_target(home: str, skel: str = "/etc/skel") -> Dict[str, Any]:
    """Empty a fresh account's home (only copies of skel); refuse anything else. Absent or empty: nothing to do."""
    if not os.path.lexists(home):
        return {"home": home, "state": "absent"}
    if os.path.islink(home) or not os.path.isdir(home):
        raise HomesError(f"{home} exists and is not a directory", "refused")
    if not os.listdir(home):
        return {"home": home, "state": "empty"}
    extra = _skel_only(home, skel)
    if extra:
        raise HomesError(
            f"{home} holds files that are not copies of {skel} ({len(extra)}): move them away or merge by hand",
            "refused",
            details=extra[:20],
        )
    emptied = 0
    for dirpath, dirnames, filenames in os.walk(home, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
            emptied += 1
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    return {"home": home, "state": "emptied", "skel_files_removed": emptied}
