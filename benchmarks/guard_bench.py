"""Benchmark: one guard run over a busy ledger vs. over an empty one.

A ledger with 10 000 rows (9 800 closed sessions spread over the last 30 days, 200 running runtimes simulated by
the test-support podman, some of them due for a warning or a stop) is timed for one ``Lab.run`` (median of 5,
min, max), against a baseline guard run over an empty ledger measured in the same process. Each repetition
starts from a fresh copy of the prepared ledger and podman state, so every run does the same work.

    .venv/bin/python benchmarks/guard_bench.py [--repeat 5] [--output benchmarks/results/guard.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

from simulated_podman import SimulatedPodman  # noqa: E402

from metalab.host.guard.config import parse_config  # noqa: E402
from metalab.host.guard.ledger import Ledger  # noqa: E402
from metalab.host.guard.sessions import Lab  # noqa: E402

NOW = 1_700_000_000.0
H = 3600
USERS = 400
RUNNING = 200
ROWS = 10_000


def podman_state(root: str) -> str:
    """The simulated podman's state file of a benchmark lab (copied with the lab's directory)."""
    return os.path.join(root, "podman.json")


def make_config(root: str, users: int) -> Dict[str, Any]:
    homes = os.path.join(root, "home")
    data: Dict[str, Any] = {
        "ledger": os.path.join(root, "ledger.sqlite"),
        "lock": os.path.join(root, "guard.lock"),
        "host": "bench",
        "log_file": os.path.join(root, "guard.log"),
        "users": {},
        "policy": {"preset": "studiolab-2023"},
        "runtime": {
            "socket_root": os.path.join(root, "sockets"),
            "token_dir": os.path.join(root, "tokens"),
            "env_dir": os.path.join(root, "env"),
            "frontdoor_group": "root",
            "gpus": list(range(8)),
        },
    }
    for i in range(users):
        name = f"user{i:04d}"
        home = os.path.join(homes, name)
        os.makedirs(home, exist_ok=True)
        data["users"][name] = {"uid": 10000 + i, "gid": 10000 + i, "home": home, "gpu": i % 10 == 0}
    return data


def populate(root: str, data: Dict[str, Any]) -> None:
    ledger = Ledger(data["ledger"])
    names = sorted(data["users"])
    closed = ROWS - RUNNING
    rows = []
    for n in range(closed):
        user = names[n % len(names)]
        started = NOW - 30 * 24 * H + n * (30 * 24 * H / closed) - 2 * H
        rows.append((user, "bench", "cpu", None, f"metalab-{user}", "ended", started, started + H, "user"))
    with ledger.transaction() as cur:
        cur.executemany(
            "INSERT INTO runtimes (user, host, kind, gpu, container, state, started, ended, end_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    sim = SimulatedPodman(podman_state(root), record_calls=False)
    state: Dict[str, Any] = {"containers": {}, "calls": []}
    for i in range(RUNNING):
        user = names[i]
        # spread start times: most run quietly, some are due for a warning, some are past their limit
        started = NOW - (i % 50) * 5 * 60 - (3 * H + 30 * 60 if i % 7 == 0 else 0)
        row = ledger.insert_starting(user, "bench", "cpu", None, f"metalab-{user}", started, "bench")
        ledger.mark_running(row.id, started, "bench")
        labels = {"metalab.user": user, "metalab.kind": "cpu", "metalab.gpu": "", "metalab.session": str(row.id)}
        state["containers"][f"metalab-{user}"] = {
            "labels": labels, "state": "running", "env": {}, "argv": [], "messages": []
        }  # fmt: skip
    sim.save(state)
    ledger.close()


def time_runs(template: str, data: Dict[str, Any], repeat: int) -> Dict[str, Any]:
    times: List[float] = []
    report: Dict[str, Any] = {}
    for _ in range(repeat):
        work = tempfile.mkdtemp(prefix="guard-bench-")
        try:
            shutil.copytree(template, work, dirs_exist_ok=True)
            cfg = json.loads(json.dumps(data).replace(template, work))
            lab = Lab(parse_config(cfg), actor="bench")
            lab.engine.runner = SimulatedPodman(podman_state(work), record_calls=False)
            t0 = time.perf_counter()
            result = lab.run(NOW)
            times.append(time.perf_counter() - t0)
            lab.close()
            report = {"warned": len(result.warned), "stopped": len(result.stopped), "errors": len(result.errors)}
        finally:
            shutil.rmtree(work)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": times,
        "work": report,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "guard.json")
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="guard-bench-empty-") as empty_root,
        tempfile.TemporaryDirectory(prefix="guard-bench-busy-") as busy_root,
    ):
        empty_cfg = make_config(empty_root, 1)
        Ledger(empty_cfg["ledger"]).close()
        SimulatedPodman(podman_state(empty_root)).save({"containers": {}, "calls": []})
        busy_cfg = make_config(busy_root, USERS)
        populate(busy_root, busy_cfg)
        baseline = time_runs(empty_root, empty_cfg, args.repeat)
        busy = time_runs(busy_root, busy_cfg, args.repeat)

    ratio = busy["median_s"] / baseline["median_s"] if baseline["median_s"] else float("inf")
    result = {
        "benchmark": "guard_run",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": args.repeat,
        "ledger_rows": ROWS,
        "running": RUNNING,
        "baseline_empty": baseline,
        "busy": busy,
        "ratio_median": ratio,
    }
    print(f"{'case':<28}{'median ms':>12}{'min ms':>10}{'max ms':>10}  work")
    for label, r in (("empty ledger (baseline)", baseline), (f"{ROWS} rows, {RUNNING} running", busy)):
        print(
            f"{label:<28}{r['median_s'] * 1000:>12.1f}{r['min_s'] * 1000:>10.1f}{r['max_s'] * 1000:>10.1f}  {r['work']}"
        )
    print(f"ratio busy/baseline (median): {ratio:.1f}x")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
