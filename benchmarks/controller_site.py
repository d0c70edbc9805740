"""Whole-site no-change reruns on one converged host, two checkouts interleaved: controller CPU, tasks, SSH sessions.

For comparing a change to the roles (issue 20: the controller's cost per host) on a host already converged with
both checkouts' site.yml, e.g. a `labctl sandbox` and a `git archive` of the commit before the change:

    python benchmarks/controller_site.py --inventory INV [-e @VARS] [--repeat 2] [--output FILE] \
        before=/tmp/old-checkout after=.

A checkout may bring its own host, converged with its own site.yml, when the two checkouts' roles differ in what
they write (a rerun of one on the other's host would change files): `before=/tmp/old-checkout@/tmp/other-inv.yml`.
The hosts must be alike (same settings, same number).

Each round runs every checkout's `site.yml` once, in the order given (drifting load from elsewhere on the machine
hits them alike); then one more run of each, not timed, through the recording ssh wrapper of benchmarks/run.py
(SSH sessions per host). Every run must report changed=0. Controller CPU = rusage of ansible-playbook and its
children (workers, ssh clients); busy = the machine's busy share (/proc/stat) during the run. JSON with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (benchmarks/run.py: ssh counting, recap, busy time)


def rerun(
    checkout: Path, inventory: str, extra: Sequence[str], log: Path, env_extra: Optional[Dict[str, str]] = None
) -> Dict[str, Any]:
    env = bench.clean_env(
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"), METALAB_COLLECTION=str(checkout), **(env_extra or {})
    )
    argv = [bench.tool("ansible-playbook"), "-i", inventory, *extra, str(checkout / "playbooks" / "site.yml")]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = bench.cpu_busy_seconds(), time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=checkout, check=False)
    seconds = time.perf_counter() - t0
    busy = bench.cpu_busy_seconds() - busy0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = log.read_text(encoding="utf-8", errors="replace")
    recap = {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "failed")} for m in bench.RECAP.finditer(text)}
    if proc.returncode != 0 or any(r["changed"] or r["failed"] for r in recap.values()):
        raise SystemExit(f"{checkout}: the rerun failed or changed something ({recap}); log {log}")
    return {
        "wall_s": round(seconds, 2),
        "controller_cpu_s": round(
            (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime), 2
        ),
        "cpu_busy_fraction": round(busy / (seconds * (os.cpu_count() or 1)), 3),
        "tasks": bench.tasks_run(log),
        "recap": recap,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", required=True)
    parser.add_argument("-e", dest="extra_vars", action="append", default=[], help="passed to ansible-playbook")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output", default=str(bench.BENCH / "results" / "controller-site.json"))
    parser.add_argument("--logs", default="", help="folder for the logs (default: a temporary one)")
    parser.add_argument(
        "checkouts", nargs="+", help="LABEL=PATH[@INVENTORY] of a checkout whose site.yml to run (on its own hosts)"
    )
    args = parser.parse_args(argv)
    cases, inventories = [], {}
    for spec in args.checkouts:
        label, _, rest = spec.partition("=")
        path, _, inventory = rest.partition("@")
        cases.append((label, Path(path).resolve()))
        inventories[label] = inventory or args.inventory
    extra = [x for v in args.extra_vars for x in ("-e", v)]
    logs = Path(args.logs or subprocess.check_output(["mktemp", "-d"], text=True).strip())
    logs.mkdir(parents=True, exist_ok=True)
    hosts_of = {
        label: {name: str(var.get("ansible_host", name)) for name, var in inventory_hosts(inventories[label]).items()}
        for label, _ in cases
    }
    if len({len(h) for h in hosts_of.values()}) != 1:
        raise SystemExit(f"the checkouts' inventories have different numbers of hosts: {hosts_of}")
    hosts = next(iter(hosts_of.values()))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _ in cases}
    for rep in range(args.repeat):
        for label, checkout in cases:
            runs[label].append(rerun(checkout, inventories[label], extra, logs / f"{label}-{rep}.log"))
            print(f"{label} {rep + 1}/{args.repeat}: {json.dumps(runs[label][-1])}", file=sys.stderr, flush=True)
    out: Dict[str, Any] = {
        "section": "controller-site",
        "what": " ".join(p for p in __doc__.split("\n\n") if p.startswith("Each round")).replace("\n", " "),
        "hosts": len(hosts),
        "cases": [],
        "machine": dict(bench.machine(), started=started, loadavg_end=list(os.getloadavg())),
    }
    for label, checkout in cases:
        env, record = bench.ssh_counting_env(logs, label)
        counted = rerun(checkout, inventories[label], extra, logs / f"{label}-count.log", env)
        sessions = bench.count_ssh(record.read_bytes(), hosts_of[label])
        cpu = [r["controller_cpu_s"] for r in runs[label]]
        out["cases"].append(
            {
                "label": label,
                "checkout": str(checkout),
                "inventory": inventories[label],
                "controller_cpu_s_median": statistics.median(cpu),
                "controller_cpu_s_per_host": round(statistics.median(cpu) / len(hosts), 2),
                "tasks_per_run": runs[label][0]["tasks"],
                "ssh_sessions_per_host": sessions,
                "cpu_busy_fraction_median": statistics.median(r["cpu_busy_fraction"] for r in runs[label]),
                "runs": runs[label],
                "counting_run": counted,
            }
        )
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps([{k: v for k, v in c.items() if k not in ("runs", "counting_run")} for c in out["cases"]]))
    return 0


def inventory_hosts(inventory: str) -> Dict[str, Dict[str, Any]]:
    data = json.loads(subprocess.check_output([bench.tool("ansible-inventory"), "-i", inventory, "--list"], text=True))
    return dict(data.get("_meta", {}).get("hostvars", {}))


if __name__ == "__main__":
    sys.exit(main())
