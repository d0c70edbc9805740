"""Prometheus textfile for node_exporter's textfile collector (written atomically: temp file + rename)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

from metalab.host.guard.files import atomic_write
from metalab.host.guard.ledger import Ledger
from metalab.host.guard.policy import KINDS, WINDOW, Interval, used_in_window


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def load_quota(path: str) -> Dict[str, Dict[str, float]]:
    """Quota numbers from a JSON file: {"alice": {"used_bytes": N, "limit_bytes": N}, ...}."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object keyed by user")
    out: Dict[str, Dict[str, float]] = {}
    for user, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {user}: expected an object with used_bytes / limit_bytes")
        out[str(user)] = {k: float(v) for k, v in entry.items() if k in ("used_bytes", "limit_bytes")}
    return out


def render(
    ledger: Ledger,
    now: float,
    host: str,
    budgets: Mapping[str, Mapping[str, Optional[int]]],
    quota: Optional[Mapping[str, Mapping[str, float]]] = None,
    gpus_total: int = 0,
) -> str:
    lines: List[str] = []

    def metric(name: str, kind: str, help_text: str, samples: List[Any]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value:.0f}" if text else f"{name} {value:.0f}")

    open_rows = ledger.open_runtimes()
    running = {k: 0 for k in KINDS}
    for row in open_rows:
        running[row.kind] += 1
    metric(
        "metalab_runtimes_running", "gauge", "Runtimes open in the ledger, per kind.",
        [({"host": host, "kind": k}, v) for k, v in sorted(running.items())],
    )  # fmt: skip
    metric(
        "metalab_gpus_in_use", "gauge", "GPUs assigned to open runtimes.",
        [({"host": host}, sum(1 for r in open_rows if r.gpu is not None))],
    )  # fmt: skip
    metric("metalab_gpus_total", "gauge", "GPUs of this host available to runtimes.", [({"host": host}, gpus_total)])

    totals: Dict[tuple, float] = {}
    rows = ledger.conn.execute(
        "SELECT user, kind, SUM(COALESCE(ended, ?) - started) FROM runtimes GROUP BY user, kind", (now,)
    ).fetchall()
    for user, kind, seconds in rows:
        totals[(user, kind)] = max(0.0, float(seconds or 0))
    metric(
        "metalab_runtime_seconds_total", "counter", "Seconds of runtime used, per user and kind (all time).",
        [({"host": host, "user": u, "kind": k}, v) for (u, k), v in sorted(totals.items())],
    )  # fmt: skip

    window: Dict[tuple, List[Interval]] = {}
    for row in ledger.sessions_since(now - WINDOW):
        window.setdefault((row.user, row.kind), []).append(Interval(row.started, row.ended))
    metric(
        "metalab_runtime_seconds_24h", "gauge", "Seconds of runtime used in the last 24 hours, per user and kind.",
        [({"host": host, "user": u, "kind": k}, used_in_window(iv, now)) for (u, k), iv in sorted(window.items())],
    )  # fmt: skip
    budget_samples = []
    for user, per_kind in sorted(budgets.items()):
        for kind, budget in sorted(per_kind.items()):
            if budget is not None:
                budget_samples.append(({"host": host, "user": user, "kind": kind}, float(budget)))
    metric("metalab_budget_seconds", "gauge", "Rolling 24-hour budget, per user and kind.", budget_samples)

    if quota:
        used = [({"host": host, "user": u}, q["used_bytes"]) for u, q in sorted(quota.items()) if "used_bytes" in q]
        limit = [({"host": host, "user": u}, q["limit_bytes"]) for u, q in sorted(quota.items()) if "limit_bytes" in q]
        metric("metalab_home_used_bytes", "gauge", "Bytes used in the user's home.", used)
        metric("metalab_home_quota_bytes", "gauge", "Hard quota of the user's home.", limit)
    metric(
        "metalab_guard_skipped_runs_total", "counter", "Guard runs that gave up waiting for a busy lock.",
        [({}, float(ledger.meta("skipped_runs") or 0))],
    )  # fmt: skip
    last_skipped = ledger.meta("last_skipped")
    if last_skipped:
        metric(
            "metalab_guard_last_skipped_timestamp_seconds", "gauge", "Time of the last guard run that gave up.",
            [({}, float(last_skipped))],
        )  # fmt: skip
    last = ledger.meta("last_run")
    if last:
        metric("metalab_guard_last_run_timestamp_seconds", "gauge", "Time of the last guard run.", [({}, float(last))])
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    atomic_write(path, text, mode=0o644)
