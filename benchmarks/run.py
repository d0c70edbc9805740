"""metalab benchmarks: no-change reruns (users, hosts, settings), runtime start latency, guard run.

Every figure is the median of N runs with min and max; targets are ratios measured within the same run (the
cases of one section are interleaved, so load from elsewhere on the machine hits them alike). Results: a table
on stdout and JSON under benchmarks/results/ (benchmarks/results/quick/ with --quick).

    python benchmarks/run.py [--quick] [--only users,hosts,config,latency,concurrent,controller,guard,route]
                             [--repeat N] [--rtt-ms 10,30] [--profile] [--latency-repeat N]
                             [--concurrent-rounds N] [--site-reruns N] [--runtime-sandbox NAME]
                             [--route-sandboxes A,B] [--route-requests N] [--route-transfers N] [--route-keep]

Sections (lab hosts are nspawn sandboxes named bm1..bm10, or --runtime-sandbox NAME for latency/concurrent; always
taken down at the end, except the route section's with --route-keep):
  users    no-change rerun of site.yml on 1 host with 1, 50 and 200 lab users         target: 200 <= 1.5x 1
  hosts    no-change rerun on 1, 5 and 10 sandboxes at once (forks >= 10)             target: 10 <= 3x 1
  config   the same rerun with metalab's ansible.cfg vs Ansible's defaults            target: defaults >= 2x
           (also over an emulated network round trip, --rtt-ms: SSH through benchmarks/netdelay.py)
  latency  interleaved pairs on one sandbox with the whole site converged: the bare JupyterLab start (podman run of
           the runtime image with JupyterLab as its command, 200 on its socket) and `metalab-guard start alice` to
           the first 200 of her API through nginx (benchmarks/start_bench.py); the guard's start step by step;
           the whole-site reruns (--site-reruns), with the controller CPU s, tasks and SSH sessions per host
                                                                 target: metalab <= 1.3x bare; < 5 s;
                                                                 whole-site controller CPU <= half of 20.77 s
  concurrent  ten lab users on that sandbox press Start at once: p50/p95 start -> 200, failures, the lock's queue
                                                                                 target: no start fails
  controller  no-change rerun (--tags subset) on 1 and 10 sandboxes: controller CPU s and SSH sessions per host,
           the machine's busy fraction                                  target: 10 <= 3x 1 host
  guard    one guard run over a 10 000-row ledger (benchmarks/guard_bench.py)        target: < 1 s
  route    a multi-host lab on two sandboxes (--route-sandboxes, default bm1,bm2; the first is the front door):
           the same requests through the front door for alice, homed there (nginx -> her socket), and bob, homed
           on the second (front door -> mutual-TLS channel -> its internal listener -> his socket), interleaved
           over kept-alive HTTPS connections from this machine: GET api/status (--route-requests) and GET of a
           4 MiB file from the home (--route-transfers) (benchmarks/route_bench.py)   reported: ratio bob/alice

The rerun sections converge a subset of site.yml (tags base,storage,lab_users: the runtime roles build a
container image per host, minutes each); the latency section converges everything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SITE = REPO / "playbooks" / "site.yml"
METALAB_CFG = REPO / "ansible.cfg"
SUBSET_TAGS = "base,storage,lab_users"
# The whole-site no-change rerun's controller CPU (1 host) when issue 20 was filed: benchmarks/results/latency.json
# of 2026-11-30 11:54 UTC, the machine shared with other sessions (load 3-15). Its target is half of it.
SITE_CONTROLLER_CPU_BEFORE = 20.77
SECTIONS = ("users", "hosts", "config", "latency", "concurrent", "controller", "guard", "route")
PROFILE = False  # --profile: per-task times of each rerun (benchmarks/callback_plugins/metalab_profile.py)
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.M,
)
# Ansible's own defaults, except what is needed to find the collection in this checkout.
DEFAULTS_CFG = """[defaults]
collections_path = {repo}/collections
roles_path = {repo}/roles
"""
HOST_VARS = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "runtime_image_base_from_host": True,
}


class BenchError(Exception):
    pass


def tool(name: str) -> str:
    venv = REPO / ".venv" / "bin" / name
    return str(venv) if venv.exists() else (shutil.which(name) or name)


def clean_env(**extra: str) -> Dict[str, str]:
    """The caller's environment without ANSIBLE_* (the Makefile exports ANSIBLE_CONFIG), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}, **extra)
    return env


def figure(times: Sequence[float]) -> Dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": list(times)}


def users_list(count: int) -> List[Dict[str, Any]]:
    return [{"name": "alice" if i == 0 else f"user{i:03d}", "quota": "1G"} for i in range(count)]


def ratio(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    return a["median_s"] / b["median_s"] if b["median_s"] else float("inf")


def machine() -> Dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    with suppress(ValueError, OSError):
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    version = subprocess.run(
        [tool("ansible-playbook"), "--version"], capture_output=True, text=True, check=False, env=clean_env()
    ).stdout.splitlines()
    os_name = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible": version[0] if version else "",
        "lab_hosts": "systemd-nspawn sandboxes (Debian 12) on the same machine, over SSH",
        "loadavg_start": list(os.getloadavg()),
    }


# -- sandboxes ------------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    names: List[str]
    workdir: Path
    info: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def sandbox_inventory(self) -> Path:
        return self.workdir / "sandboxes.yml"

    def vars_inventory(self, per_host_users: Dict[str, int]) -> Path:
        """One lab over the sandboxes: lab_users names each user's home host (required with several lab hosts),
        per_host_users[name] users homed on each (alice, user001, user002, ... in host order: unique in the lab)."""
        path = self.workdir / "lab.yml"
        homes = [name for name in self.names for _ in range(per_host_users.get(name, 0))]
        users = [dict(user, host=home) for user, home in zip(users_list(len(homes)), homes)]
        data = {"all": {"vars": {**HOST_VARS, "lab_users": users}, "hosts": {name: {} for name in self.names}}}
        path.write_text(json.dumps(data, indent=1))  # JSON is YAML
        return path


@contextmanager
def fleet(names: List[str], workdir: Path, keep: bool = False) -> Iterator[Fleet]:
    """Sandboxes up for the block, down afterwards whatever happened (``keep``: left up, e.g. to look at them)."""
    labctl = tool("labctl")
    f = Fleet(names=names, workdir=workdir)
    # Facts cached for an earlier sandbox of the same name: the first converge gathers them afresh.
    for cached in (REPO / ".cache" / "facts").glob("*"):
        if any(cached.name == name or cached.name.endswith("_" + name) for name in names):
            cached.unlink()
    try:
        for name in names:
            out = subprocess.run(
                [labctl, "sandbox", "up", name, "--json"], capture_output=True, text=True, check=False, timeout=300
            )
            if out.returncode != 0:
                raise BenchError(f"labctl sandbox up {name} failed: {out.stderr.strip()[-500:]}")
            f.info[name] = json.loads(out.stdout)
        inv = subprocess.run(
            [labctl, "sandbox", "inventory", *names], capture_output=True, text=True, check=True, timeout=60
        )
        f.sandbox_inventory.write_text(inv.stdout)
        yield f
    finally:
        if not keep:
            subprocess.run([labctl, "sandbox", "down", *names], capture_output=True, check=False, timeout=300)


# -- playbook runs --------------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    rc: int
    recap: Dict[str, Dict[str, int]]
    log: Path
    cpu_s: float = 0.0
    controller_cpu_s: float = 0.0


def cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far: user, nice, system, irq, softirq, steal of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields)) / os.sysconf("SC_CLK_TCK")


def playbook(
    inventories: Sequence[Path],
    cfg: Path,
    log: Path,
    limit: Optional[str] = None,
    tags: Optional[str] = SUBSET_TAGS,
    extra_env: Optional[Dict[str, str]] = None,
    timeout: float = 3600,
) -> Run:
    if PROFILE:
        extra_env = dict(
            extra_env or {},
            ANSIBLE_CALLBACK_PLUGINS=str(BENCH / "callback_plugins"),
            # Both: the variable replaces ansible.cfg's list, which keeps the module payloads between runs.
            ANSIBLE_CALLBACKS_ENABLED="metalab_profile,metalab.lab.module_cache",
            METALAB_PROFILE_OUT=str(log.with_suffix(".profile.json")),
        )
    argv = [tool("ansible-playbook"), str(SITE)]
    for inv in inventories:
        argv += ["-i", str(inv)]
    if limit:
        argv += ["--limit", limit]
    if tags:
        argv += ["--tags", tags]
    env = clean_env(ANSIBLE_CONFIG=str(cfg), **(extra_env or {}))
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0 = cpu_busy_seconds(), time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=timeout, check=False
        )
    seconds = time.perf_counter() - t0
    cpu_s = cpu_busy_seconds() - cpu0
    # ansible-playbook and everything it waited for (workers, ssh clients): the controller's share. The lab
    # hosts' processes (sshd, sudo, python on the host) are not its children: they are the rest of cpu_s.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller_cpu_s = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    text = log.read_text(encoding="utf-8", errors="replace")
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(text)
    }
    return Run(
        seconds=seconds, rc=proc.returncode, recap=recap, log=log, cpu_s=cpu_s, controller_cpu_s=controller_cpu_s
    )


def converge(f: Fleet, inventories: Sequence[Path], tags: Optional[str], label: str) -> float:
    run = playbook(inventories, METALAB_CFG, f.workdir / f"converge-{label}.log", tags=tags)
    bad = {h: r for h, r in run.recap.items() if r["failed"] or r["unreachable"]}
    if run.rc != 0 or bad or set(run.recap) != set(f.names):
        tail = "\n".join(run.log.read_text(errors="replace").splitlines()[-30:])
        raise BenchError(f"converge ({label}) failed (rc {run.rc}, {bad}):\n{tail}")
    return run.seconds


@dataclass
class Case:
    label: str
    limit: Optional[str]
    cfg: Path
    hosts: int
    env: Dict[str, str] = field(default_factory=dict)
    config: str = ""
    tags: Optional[str] = SUBSET_TAGS  # None: the whole site.yml
    rtt_ms: float = 0  # round trip added to the SSH stream (netdelay.py); 0: the sandboxes' own veth
    times: List[float] = field(default_factory=list)
    changed: List[int] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)
    controller_cpu: List[float] = field(default_factory=list)
    slowest: List[Dict[str, Any]] = field(default_factory=list)

    def result(self) -> Dict[str, Any]:
        out = {
            "label": self.label,
            "hosts": self.hosts,
            "config": self.config or ("metalab" if self.cfg == METALAB_CFG else "ansible-defaults"),
            "rtt_ms": self.rtt_ms,
            **figure(self.times),
            "changed": self.changed,
        }
        if self.cpu:
            # CPU seconds the whole machine spent during the run (controller and lab hosts share it), and how
            # busy its cores were: near 1.0 means the run was bound by this machine's cores, not by waiting.
            cores = os.cpu_count() or 1
            out["cpu_s_median"] = round(statistics.median(self.cpu), 2)
            out["cpu_s_per_host"] = round(statistics.median(self.cpu) / self.hosts, 2)
            if self.controller_cpu:
                controller = statistics.median(self.controller_cpu)
                out["controller_cpu_s_median"] = round(controller, 2)
                out["controller_cpu_s_per_host"] = round(controller / self.hosts, 2)
                out["controller_cpu_s_runs"] = [round(x, 2) for x in self.controller_cpu]
                out["host_side_cpu_s_per_host"] = round((statistics.median(self.cpu) - controller) / self.hosts, 2)
            out["cpu_busy_fraction"] = round(
                statistics.median(c / (t * cores) for c, t in zip(self.cpu, self.times)), 2
            )
        if self.slowest:
            out["slowest_tasks_last_run"] = self.slowest
        return out


def measure(f: Fleet, inventories: Sequence[Path], cases: List[Case], repeat: int) -> None:
    """Interleave the cases (case 1, case 2, ..., case 1, ...): drifting load hits each case alike."""
    for rep in range(repeat):
        for case in cases:
            slug = re.sub(r"[^a-z0-9]+", "-", case.label.lower()).strip("-")
            run = playbook(
                inventories, case.cfg, f.workdir / f"{slug}-{rep}.log", limit=case.limit, tags=case.tags,
                extra_env=case.env,
            )  # fmt: skip
            failed = {h: r for h, r in run.recap.items() if r["failed"] or r["unreachable"]}
            if run.rc != 0 or failed:
                raise BenchError(f"{case.label}: rerun failed (rc {run.rc}, {failed}); log {run.log}")
            # Every case times a no-change rerun: one that changed something measured a different thing.
            changed = {h: r["changed"] for h, r in run.recap.items() if r["changed"]}
            if changed:
                raise BenchError(
                    f"{case.label}: the rerun changed something ({changed}), so it is no figure; log {run.log}"
                )
            case.times.append(run.seconds)
            case.cpu.append(run.cpu_s)
            case.controller_cpu.append(run.controller_cpu_s)
            case.changed.append(sum(r["changed"] for r in run.recap.values()))
            profile = run.log.with_suffix(".profile.json")
            if profile.exists():
                tasks = json.loads(profile.read_text())["tasks"]
                case.slowest = [
                    {"task": t["name"], "seconds": round(t["seconds"], 2)}
                    for t in sorted(tasks, key=lambda t: -t["seconds"])[:10]
                ]
            print(f"  {case.label:<56} run {rep + 1}/{repeat}: {run.seconds:6.1f} s", file=sys.stderr, flush=True)


def mitogen() -> Dict[str, str]:
    """The environment of labctl's --mitogen (metalab.labctl.runner.mitogen_env); empty when the extra is missing."""
    sys.path.insert(0, str(REPO / "src"))
    try:
        from metalab.labctl.runner import MitogenNotInstalled, mitogen_env
    finally:
        sys.path.pop(0)
    try:
        return mitogen_env()
    except MitogenNotInstalled as exc:
        print(f"  Mitogen cases skipped: {exc}", file=sys.stderr)
        return {}


def defaults_cfg(workdir: Path) -> Path:
    path = workdir / "defaults" / "ansible.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULTS_CFG.format(repo=REPO))
    return path


@contextmanager
def network(work: Path, rtt_ms: float) -> Iterator[Dict[str, str]]:
    """The environment that sends a run's SSH through netdelay.py with `rtt_ms` added to every round trip.

    Each round trip gets its own ControlPath directory, so a run never borrows a master connection opened
    without the delay (or with another one). The masters are closed when the block ends.
    """
    if not rtt_ms:
        yield {}
        return
    control = work / f"cp-rtt{rtt_ms:g}"
    control.mkdir(parents=True, exist_ok=True)
    proxy = f"{sys.executable} {BENCH / 'netdelay.py'} --rtt-ms {rtt_ms:g} %h %p"
    try:
        yield {"ANSIBLE_SSH_EXTRA_ARGS": f'-o ProxyCommand="{proxy}"', "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control)}
    finally:
        for sock in control.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab-host"], capture_output=True, check=False,
                timeout=30,
            )  # fmt: skip


def metalab_forks() -> int:
    for line in METALAB_CFG.read_text().splitlines():
        m = re.match(r"^\s*forks\s*=\s*(\d+)", line)
        if m:
            return int(m.group(1))
    return 5


# -- sections -------------------------------------------------------------------------------------------------


def section_users(work: Path, repeat: int, quick: bool) -> Dict[str, Any]:
    counts = [1, 200] if quick else [1, 50, 200]
    names = [f"bm{i + 1}" for i in range(len(counts))]
    with fleet(names, work) as f:
        lab = f.vars_inventory(dict(zip(names, counts)))
        inventories = [f.sandbox_inventory, lab]
        first = converge(f, inventories, SUBSET_TAGS, "users")
        cases = [Case(f"1 host, {n} lab users", name, METALAB_CFG, 1) for name, n in zip(names, counts)]
        measure(f, inventories, cases, repeat)
    results = [dict(c.result(), users=n) for c, n in zip(cases, counts)]
    r = ratio(cases[-1].result(), cases[0].result())
    return {
        "section": "users",
        "tags": SUBSET_TAGS,
        "first_converge_s": first,
        "cases": results,
        "targets": [target(f"{counts[-1]} users vs 1 user", r, "<=", 1.5)],
    }


def config_cases(
    base: Case, default_cfg: Path, rtts: Sequence[float], envs: Dict[float, Dict[str, str]], mitogen_env: Dict[str, str]
) -> List[Tuple[Case, Case, Optional[Case]]]:
    """For one metalab case: (metalab, Ansible's defaults, metalab + Mitogen or None) at each round trip."""
    out: List[Tuple[Case, Case, Optional[Case]]] = []
    for rtt in rtts:
        net = envs[rtt]
        suffix = f", RTT {rtt:g} ms" if rtt else ""
        ours = base if not rtt else Case(f"{base.label}{suffix}", base.limit, METALAB_CFG, base.hosts, env=dict(net),
                                         tags=base.tags, rtt_ms=rtt)  # fmt: skip
        theirs = Case(f"{base.label}, Ansible defaults{suffix}", base.limit, default_cfg, base.hosts, env=dict(net),
                      tags=base.tags, rtt_ms=rtt)  # fmt: skip
        mito = None
        if mitogen_env:
            mito = Case(f"{base.label}, + Mitogen{suffix}", base.limit, METALAB_CFG, base.hosts,
                        env={**net, **mitogen_env}, config="metalab+mitogen", tags=base.tags, rtt_ms=rtt)  # fmt: skip
        out.append((ours, theirs, mito))
    return out


def config_targets(triples: List[Tuple[Case, Case, Optional[Case]]], where: str) -> List[Dict[str, Any]]:
    """metalab's ansible.cfg against the defaults (the verdict), and the Mitogen extra beside it."""
    targets = []
    for ours, theirs, mito in triples:
        net = f", RTT {ours.rtt_ms:g} ms" if ours.rtt_ms else ""
        targets.append(target(f"defaults vs metalab, {where}{net}", ratio(theirs.result(), ours.result()), ">=", 2.0))
        if mito is not None:
            targets.append(
                target(f"defaults vs metalab + Mitogen extra, {where}{net}", ratio(theirs.result(), mito.result()),
                       ">=", 2.0)
            )  # fmt: skip
    return targets


def section_hosts(
    work: Path, repeat: int, quick: bool, with_config: bool, with_hosts: bool, rtts: Sequence[float]
) -> List[Dict[str, Any]]:
    sizes = [1, 3] if quick else [1, 5, 10]
    names = [f"bm{i + 1}" for i in range(sizes[-1])]
    out: List[Dict[str, Any]] = []
    with fleet(names, work) as f, ExitStack() as stack:
        lab = f.vars_inventory(dict.fromkeys(names, 3))
        inventories = [f.sandbox_inventory, lab]
        first = converge(f, inventories, SUBSET_TAGS, "fleet")
        fleet_cases = [
            Case(f"{n} host{'s' if n > 1 else ''} at once", ",".join(names[:n]), METALAB_CFG, n) for n in sizes
        ]
        cases = list(fleet_cases) if with_hosts else [fleet_cases[0], fleet_cases[-1]]
        per_size: List[List[Tuple[Case, Case, Optional[Case]]]] = []
        if with_config:
            envs = {rtt: stack.enter_context(network(work, rtt)) for rtt in [0.0, *rtts]}
            extra, default = mitogen(), defaults_cfg(work)
            for base in (fleet_cases[0], fleet_cases[-1]):
                triples = config_cases(base, default, [0.0, *rtts], envs, extra)
                per_size.append(triples)
                cases += [c for triple in triples for c in triple if c is not None and c not in cases]
        measure(f, inventories, cases, repeat)
    if with_hosts:
        r = ratio(fleet_cases[-1].result(), fleet_cases[0].result())
        forks = metalab_forks()
        out.append(
            {
                "section": "hosts",
                "tags": SUBSET_TAGS,
                "users_per_host": 3,
                "forks": forks,
                "first_converge_s": first,
                "cases": [c.result() for c in fleet_cases],
                "targets": [target(f"{sizes[-1]} hosts vs 1 host (forks {forks})", r, "<=", 3.0)],
            }
        )
    if with_config:
        targets: List[Dict[str, Any]] = []
        results: List[Dict[str, Any]] = []
        for triples in per_size:
            hosts = triples[0][0].hosts
            results += [c.result() for triple in triples for c in triple if c is not None]
            targets += config_targets(triples, f"{hosts} host(s)")
        one, many = per_size[0][0][2], per_size[-1][0][2]
        if one is not None and many is not None:
            targets.append(
                target(f"{many.hosts} hosts vs 1 host, metalab + Mitogen extra", ratio(many.result(), one.result()),
                       "<=", 3.0)
            )  # fmt: skip
        out.append(
            {
                "section": "config",
                "tags": SUBSET_TAGS,
                "defaults_cfg": DEFAULTS_CFG.format(repo="<repo>"),
                "mitogen": "0.3.54" if one is not None else "not installed (pip install 'metalab[mitogen]')",
                "rtt_ms": [0.0, *rtts],
                "cases": results,
                "targets": targets,
            }
        )
    return out


START_BENCH = BENCH / "start_bench.py"
CONCURRENT_USERS = 10
SSH_LOG_ENV = "METALAB_BENCH_SSH_LOG"
# An ssh_executable that records each invocation (argv, fields split by US, records by RS) and execs ssh.
SSH_WRAPPER = """#!/bin/sh
printf '%s\\037' "$@" >> "${log}"
printf '\\036' >> "${log}"
exec ssh "$@"
"""


def ssh_argv(info: Dict[str, Any]) -> List[str]:
    """ssh to a sandbox as its admin (``info``: its `labctl sandbox up --json` record); the command follows."""
    return [
        "ssh", "-p", str(info["ansible_port"]), "-i", info["ansible_ssh_private_key_file"],
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{info['ansible_user']}@{info['ansible_host']}",
    ]  # fmt: skip


def host_script(info: Dict[str, Any], args: Sequence[str], timeout: float) -> Dict[str, Any]:
    """Run benchmarks/start_bench.py as root on a sandbox (piped over SSH) and return its JSON."""
    ssh = [*ssh_argv(info), "sudo python3 - " + " ".join(args)]
    out = subprocess.run(
        ssh, input=START_BENCH.read_text(), capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"start_bench.py {args[0]} failed: {out.stderr.strip()[-800:]}") from None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never interpolated."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


def latency_result(data: Dict[str, Any]) -> Dict[str, Any]:
    """The latency section from start_bench.py's runs: both sides, every run, the ratio of the medians."""
    if data["errors"] or not data["bare"] or not data["metalab"]:
        raise BenchError(f"latency: {data['errors'] or 'no runs'}")
    bare = figure([r["seconds"] for r in data["bare"]])
    ours = figure([r["seconds"] for r in data["metalab"]])
    guard = figure([r["guard_s"] for r in data["metalab"]])
    podman = figure([r["podman_s"] for r in data["bare"]])
    n = len(data["metalab"])
    r = ratio(ours, bare)
    return {
        "section": "latency",
        "what": (
            "interleaved pairs on one host: (bare) podman run -d of the runtime image with JupyterLab as its command "
            "(no supervisord, no guard) -> first 200 of <base_url>api/status over its unix socket; (metalab) "
            "metalab-guard start alice -> first 200 of /user/alice/api/status through nginx with her token"
        ),
        "cases": [
            dict(bare, label=f"bare JupyterLab start in the runtime image -> 200 on its socket (n={n})"),
            dict(podman, label="  of which podman run -d returned"),
            dict(ours, label=f"metalab-guard start -> 200 through the front door (n={n})"),
            dict(guard, label="  of which metalab-guard start returned"),
        ],
        "runs": {"bare": data["bare"], "metalab": data["metalab"]},
        "targets": [
            target("metalab start vs bare JupyterLab start (ratio of medians)", r, "<=", 1.3),
            target("start to first API answer (s)", ours["median_s"], "<", 5.0),
        ],
    }


def profile_summary(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Median of each step of profiled starts (start_bench.py profile): the guard's own steps in the order they ran
    (a step that ran twice in a start counts once, summed), then the phases after the guard returned."""
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        raise BenchError(f"profile: no start succeeded ({[r.get('error') for r in runs]})")
    order: List[str] = []
    per_step: Dict[str, List[float]] = {}
    for r in ok:
        sums: Dict[str, float] = {}
        for label, _at, seconds in r["steps"]:
            if label == "exit":
                continue
            if label not in order:
                order.append(label)
            sums[label] = sums.get(label, 0.0) + seconds
        for label, seconds in sums.items():
            per_step.setdefault(label, []).append(seconds)
    phases = [
        ("metalab-guard start, whole process (exec to exit)", [r["guard_returned_s"] for r in ok]),
        ("container up -> JupyterLab socket appears (after the guard returned)",
         [r["socket_appeared_s"] - r["guard_returned_s"] for r in ok]),
        ("socket appears -> JupyterLab answers 200 on it", [r["socket_200_s"] - r["socket_appeared_s"] for r in ok]),
        ("socket 200 -> 200 through nginx (TLS, proxy)", [r["frontdoor_200_s"] - r["socket_200_s"] for r in ok]),
        ("total: start -> 200 through nginx", [r["frontdoor_200_s"] for r in ok]),
    ]  # fmt: skip
    out = [{"step": f"guard: {label}", "median_s": round(statistics.median(per_step[label]), 4)} for label in order]
    out += [{"step": label, "median_s": round(statistics.median(v), 4)} for label, v in phases]
    return out


def concurrent_result(data: Dict[str, Any], single_guard_s: Optional[float]) -> Dict[str, Any]:
    """Ten users pressing Start at once: p50/p95 of start -> 200 over every start of every round, failures."""
    starts = [r for rnd in data["rounds"] for r in rnd]
    failed = [r for r in starts if not r["ok"]]
    ok = [r["seconds"] for r in starts if r["ok"]]
    guard = [r["guard_s"] for r in starts]
    users = len(data["rounds"][0]) if data["rounds"] else 0
    case: Dict[str, Any] = {"label": f"{users} users press Start at once: start -> 200 ({len(ok)} of {len(starts)})"}
    if ok:
        case.update(figure(ok), p50_s=percentile(ok, 50), p95_s=percentile(ok, 95))
    guard_case = dict(figure(guard), label="  of which their metalab-guard start returned",
                      p50_s=percentile(guard, 50), p95_s=percentile(guard, 95))  # fmt: skip
    note = (
        "metalab-guard start holds the guard lock only for its decisions and its ledger row; her token, socket "
        "tmpfs and podman run run under her own start lock, so the podman runs of simultaneous starts overlap "
        "(guard_s no longer grows like a queue); what they share is podman's own locking and the machine's cores."
    )
    if single_guard_s:
        note += f" One start alone spends {single_guard_s:.2f} s in metalab-guard start (latency section)."
    return {
        "section": "concurrent",
        "what": f"{users} lab users on one host run metalab-guard start at the same moment (threads behind a "
        "barrier); each polls her own /user/NAME/api/status through nginx until 200; all stopped between rounds",
        "cases": [case, guard_case],
        "failures": [{"user": r["user"], "error": r.get("error", "")} for r in failed],
        "serialization": note,
        "runs": data["rounds"],
        "targets": [
            target("starts that failed", len(failed), "<=", 0),
        ],
    }


def section_runtime(
    work: Path,
    latency_n: int,
    rounds: int,
    rerun_repeat: int,
    rtts: Sequence[float],
    only: Sequence[str],
    sandbox: str = "bm1",
) -> List[Dict[str, Any]]:
    """One sandbox with the whole site converged (runtime image included) and 10 lab users: start timings, and
    (with the latency section) the whole-site no-change reruns. ``sandbox``: its name (taken down afterwards)."""
    out: List[Dict[str, Any]] = []
    users = ["alice", *(f"user{i:03d}" for i in range(1, CONCURRENT_USERS))]
    with fleet([sandbox], work) as f, ExitStack() as stack:
        lab = f.vars_inventory({sandbox: CONCURRENT_USERS})
        first = converge(f, [f.sandbox_inventory, lab], None, "latency")
        info = f.info[sandbox]
        single: Optional[float] = None
        if "latency" in only:
            data = host_script(info, ["latency", "alice", str(latency_n)], timeout=1800)
            sec = latency_result(data)
            single = sec["cases"][3]["median_s"]
            sec["first_converge_s"] = first
            # Where a start spends its time: the guard's steps timed inside it, then the phases after it returned.
            prof = host_script(info, ["profile", "alice", "3"], timeout=600)
            sec["start_breakdown"] = profile_summary(prof["runs"])
            sec["start_breakdown_runs"] = prof["runs"]
            # While the whole site is converged here: its no-change rerun (runtime roles included), with metalab's
            # ansible.cfg, with Ansible's defaults and with the Mitogen extra, at each round trip, interleaved.
            if rerun_repeat:
                envs = {rtt: stack.enter_context(network(work, rtt)) for rtt in [0.0, *rtts]}
                base = Case("whole site.yml rerun, 1 host", sandbox, METALAB_CFG, 1, tags=None)
                triples = config_cases(base, defaults_cfg(work), [0.0, *rtts], envs, mitogen())
                site_cases = [c for triple in triples for c in triple if c is not None]
                measure(f, [f.sandbox_inventory, lab], site_cases, rerun_repeat)
                site = [c.result() for c in site_cases]
                # The controller's cost per host of the whole-site rerun (issue 20): its CPU above, and the SSH
                # sessions of one more run of the base case, not timed, through the recording ssh wrapper.
                env, record = ssh_counting_env(work, "site")
                run = playbook([f.sandbox_inventory, lab], METALAB_CFG, work / "count-site.log", limit="bm1", tags=None,
                               extra_env=env)  # fmt: skip
                if run.rc != 0:
                    raise BenchError(f"whole site: counting run failed (rc {run.rc}); log {run.log}")
                per_host = count_ssh(record.read_bytes(), {"bm1": str(info["ansible_host"])})
                site[0].update(ssh_sessions_per_host=per_host, tasks_per_run=tasks_run(run.log))
                sec["cases"] += site
                sec["targets"] += config_targets(triples, "whole site, 1 host")
                sec["targets"].append(
                    target(
                        "controller CPU s per host, whole-site no-change rerun, 1 host (busy "
                        f"{site[0].get('cpu_busy_fraction', 0):.0%}) vs half of the issue's "
                        f"{SITE_CONTROLLER_CPU_BEFORE} s",
                        site[0]["controller_cpu_s_per_host"],
                        "<=",
                        round(SITE_CONTROLLER_CPU_BEFORE / 2, 2),
                    )
                )
            out.append(sec)
        if "concurrent" in only:
            data = host_script(info, ["concurrent", str(rounds), *users], timeout=1800)
            out.append(concurrent_result(data, single))
    return out


def tasks_run(log: Path) -> int:
    """Tasks a run went through (its log's TASK and RUNNING HANDLER headers: ok, changed and skipped alike)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return len(re.findall(r"^(?:TASK|RUNNING HANDLER) \[", text, re.M))


def ssh_counting_env(workdir: Path, label: str) -> Tuple[Dict[str, str], Path]:
    """Environment for a run whose ssh invocations are recorded (benchmarks' SSH_WRAPPER), and the log it fills."""
    log = workdir / f"ssh-{label}.log"
    log.write_bytes(b"")
    wrapper = workdir / f"ssh-{label}.sh"
    wrapper.write_text(SSH_WRAPPER.replace("${log}", str(log)))
    wrapper.chmod(0o755)
    return {"ANSIBLE_SSH_EXECUTABLE": str(wrapper)}, log


def count_ssh(record: bytes, hosts: Dict[str, str]) -> Dict[str, int]:
    """ssh invocations per inventory host in SSH_WRAPPER's record (hosts: name -> address as Ansible passes it).

    With ControlMaster each invocation is one session over the host's master connection: at least one round trip.
    """
    counts = dict.fromkeys(hosts, 0)
    by_address = {addr: name for name, addr in hosts.items()}
    for entry in record.split(b"\x1e"):
        if not entry:
            continue
        args = entry.decode("utf-8", "replace").split("\x1f")
        for arg in args:
            if arg in by_address:
                counts[by_address[arg]] += 1
                break
    return counts


def section_controller(work: Path, repeat: int, quick: bool) -> Dict[str, Any]:
    """Controller CPU and SSH sessions per host of a no-change rerun (the --tags subset), on 1 and N hosts."""
    size = 3 if quick else 10
    names = [f"bm{i + 1}" for i in range(size)]
    with fleet(names, work) as f:
        lab = f.vars_inventory(dict.fromkeys(names, 3))
        inventories = [f.sandbox_inventory, lab]
        first = converge(f, inventories, SUBSET_TAGS, "controller")
        cases = [
            Case("1 host", names[0], METALAB_CFG, 1),
            Case(f"{size} hosts at once", ",".join(names), METALAB_CFG, size),
        ]
        measure(f, inventories, cases, repeat)
        # One more run of each, not timed, with every ssh invocation recorded (a wrapper costs a little CPU).
        addresses = {n: str(f.info[n]["ansible_host"]) for n in names}
        sessions: List[Dict[str, int]] = []
        for case in cases:
            env, log = ssh_counting_env(work, f"{case.hosts}")
            run = playbook(inventories, METALAB_CFG, work / f"count-{case.hosts}.log", limit=case.limit,
                           extra_env=env)  # fmt: skip
            if run.rc != 0:
                raise BenchError(f"controller: counting run failed (rc {run.rc}); log {run.log}")
            sessions.append({k: v for k, v in count_ssh(log.read_bytes(), addresses).items() if v})
    results = []
    for case, per_host in zip(cases, sessions):
        r = case.result()
        r.update(
            ssh_sessions_per_host=per_host,
            ssh_sessions_per_host_median=statistics.median(per_host.values()) if per_host else 0,
        )
        results.append(r)
    one, many = results
    return {
        "section": "controller",
        "tags": SUBSET_TAGS,
        "users_per_host": 3,
        "first_converge_s": first,
        "what": "no-change rerun of site.yml --tags " + SUBSET_TAGS + ": controller CPU = rusage of ansible-playbook "
        "and its children (workers, ssh clients); SSH sessions = invocations of ssh per host, counted in a separate "
        "untimed run through a recording ssh_executable; cpu_busy_fraction = the machine's busy share (/proc/stat)",
        "cases": results,
        "targets": [
            target(
                f"{size} hosts vs 1 host wall time (busy {many.get('cpu_busy_fraction', 0):.0%} of the cores)",
                many["median_s"] / one["median_s"],
                "<=",
                3.0,
            ),
            target(
                f"controller CPU per host, {size} hosts vs 1 host",
                many["controller_cpu_s_per_host"] / one["controller_cpu_s_per_host"],
                "<=",
                1.0,
            ),
        ],  # fmt: skip
    }


def section_guard(work: Path, repeat: int, results: Path) -> Dict[str, Any]:
    out = results / "guard.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "guard_bench.py"), "--repeat", str(repeat), "--output", str(out)],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"guard_bench.py failed: {proc.stderr.strip()[-800:]}")
    data = json.loads(out.read_text())
    busy = data["busy"]
    return {
        "section": "guard",
        "cases": [
            dict(data["baseline_empty"], label="guard run, empty ledger"),
            dict(busy, label=f"guard run, {data['ledger_rows']} rows, {data['running']} running"),
        ],
        "targets": [target(f"guard run over {data['ledger_rows']} rows (s)", busy["median_s"], "<", 1.0)],
    }


# -- route: the routing overhead of a multi-host lab ---------------------------------------------------------

ROUTE_USERS = ("alice", "bob")  # alice homed on the front door (the first sandbox), bob on the second
ROUTE_INTERNAL_LOG = "/var/log/nginx/metalab-internal.log"  # the home host's internal listener (roles/frontdoor)


def route_bench() -> Any:
    """benchmarks/route_bench.py as a module, whatever sys.path holds (run.py is also loaded by path in tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("metalab_route_bench", BENCH / "route_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def route_sandboxes(text: str) -> Tuple[str, str]:
    """--route-sandboxes: two different sandbox names, the front door first."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"two different sandbox names, the front door first (e.g. bm1,bm2), not {text!r}")
    bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", n)]
    if bad:
        raise ValueError(f"not a sandbox name: {', '.join(bad)}")
    return names[0], names[1]


def route_counts(quick: bool, requests: Optional[int], transfers: Optional[int]) -> Tuple[int, int]:
    """Samples per user: (api/status requests, 4 MiB transfers); --quick: fewer."""
    n_api = requests if requests is not None else (50 if quick else 1000)
    n_file = transfers if transfers is not None else (10 if quick else 100)
    if n_api < 1 or n_file < 1:
        raise ValueError(f"at least one sample of each kind, not {n_api} requests and {n_file} transfers")
    return n_api, n_file


def route_inventory(workdir: Path, front: str, home: str) -> Path:
    """The lab's vars: alice homed on the front door, bob on the other host. lab_http_proxy comes with the sandbox
    inventory (the proxy on the sandbox's veth peer, as in molecule/default)."""
    users = [{"name": "alice", "quota": "1G", "host": front}, {"name": "bob", "quota": "1G", "host": home}]
    data = {"all": {"vars": dict(HOST_VARS, lab_users=users), "children": {"lab_frontdoor": {"hosts": {front: None}}}}}
    path = workdir / "route-lab.yml"
    path.write_text(json.dumps(data, indent=1))
    return path


def host_command(info: Dict[str, Any], command: str, timeout: float = 300) -> str:
    out = subprocess.run([*ssh_argv(info), command], capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise BenchError(f"{info.get('name')}: `{command}` failed: {(out.stderr + out.stdout).strip()[-500:]}")
    return out.stdout


def start_runtime(info: Dict[str, Any], user: str) -> str:
    """A fresh runtime for ``user`` on her home host (stopped first when one runs); her token."""
    host_command(
        info, f"sudo metalab-guard stop {user} --reason admin >/dev/null 2>&1; sudo metalab-guard start {user}"
    )
    token = host_command(info, f"sudo metalab-guard token {user}").strip()
    if not re.fullmatch(r"[0-9a-zA-Z_-]{16,}", token):
        raise BenchError(f"metalab-guard token {user}: not a token: {token[:40]!r}")
    return token


def logged(info: Dict[str, Any], user: str) -> int:
    """Requests for /user/USER/ in a host's internal-listener access log (what reached it over the channel)."""
    out = host_command(info, f"sudo grep -c -F ' /user/{user}/' {ROUTE_INTERNAL_LOG} || true")
    return int(out.strip() or 0)


def route_result(raw: Dict[str, Any], hosts: Dict[str, str]) -> Dict[str, Any]:
    """Figures of route_bench.route()'s raw samples: per kind and side median, p95, min, max, every sample; the
    ratios remote/local (of the medians, of the p95s, and the median of the per-round pairs)."""
    users = raw["users"]
    where = {
        "local": f"{users['local']}@{hosts['local']} (front door -> socket)",
        "remote": f"{users['remote']}@{hosts['remote']} (front door -> mTLS -> {hosts['remote']})",
    }
    what = {"api_status": "GET api/status", "file_4MiB": "GET 4 MiB file"}
    cases: List[Dict[str, Any]] = []
    ratios: List[Dict[str, Any]] = []
    for kind, sides in raw["samples"].items():
        size = raw["sizes"].get(kind, 0)
        fig: Dict[str, Dict[str, Any]] = {}
        for side in ("local", "remote"):
            times = [round(t, 6) for t in sides[side]]
            if not times:
                raise BenchError(f"route: no {kind} samples for {side}")
            fig[side] = dict(
                figure(times), label=f"{what.get(kind, kind)}, {where[side]}", kind=kind, side=side,
                user=users[side], host=hosts[side], n=len(times), p95_s=percentile(times, 95),
            )  # fmt: skip
            if size:
                fig[side]["mib_per_s_median"] = round(size / 2**20 / fig[side]["median_s"], 1)
            cases.append(fig[side])
        local, remote = fig["local"], fig["remote"]
        pairs = [r / a for a, r in zip(sides["local"], sides["remote"]) if a > 0]
        ratios.append(
            {
                "what": f"{what.get(kind, kind)}: {users['remote']} (other host) / {users['local']} (front door)",
                "kind": kind,
                "n": min(local["n"], remote["n"]),
                "median_ratio": round(remote["median_s"] / local["median_s"], 3),
                "p95_ratio": round(remote["p95_s"] / local["p95_s"], 3),
                "paired_median_ratio": round(statistics.median(pairs), 3),
                "added_ms_median": round((remote["median_s"] - local["median_s"]) * 1000, 2),
            }
        )
    return {
        "section": "route",
        "what": (
            "the same requests through the lab's one address (the front door, HTTPS, one kept-alive connection per "
            "user from the controller, `Authorization: token <hers>`): (local) a user homed on the front door, nginx "
            "-> her JupyterLab's unix socket; (remote) a user homed on another lab host, front door nginx -> "
            "mutual-TLS channel (kept-alive upstream) -> that host's internal listener -> his socket. Interleaved "
            "rounds (local/remote, then remote/local), warm-up requests not kept, every answer checked (status JSON; "
            "the file byte for byte). A sample: request sent -> whole body read."
        ),
        "hosts": hosts,
        "cases": cases,
        "ratios": ratios,
        "targets": [],
        "raw": {k: v for k, v in raw.items() if k != "samples"},
    }


def section_route(work: Path, names: Tuple[str, str], n_api: int, n_file: int, keep: bool) -> Dict[str, Any]:
    """Two sandboxes, the whole site converged (runtime images included), both runtimes started; the controller
    measures through the front door. Sandboxes down afterwards unless ``keep``."""
    rb = route_bench()
    front, home = names
    with fleet(list(names), work, keep=keep) as f:
        lab = route_inventory(work, front, home)
        first = converge(f, [f.sandbox_inventory, lab], None, "route")
        tokens = {"alice": start_runtime(f.info[front], "alice"), "bob": start_runtime(f.info[home], "bob")}
        door = f.info[front]
        before = {u: logged(f.info[home], u) for u in ROUTE_USERS}
        cpu0, t0 = cpu_busy_seconds(), time.perf_counter()
        try:
            raw = rb.route(
                str(door["ansible_host"]), int(door.get("https_port", 443)),
                {"local": ("alice", tokens["alice"]), "remote": ("bob", tokens["bob"])}, n_api, n_file,
            )  # fmt: skip
        except (rb.RouteError, OSError) as exc:
            raise BenchError(f"route: {exc}") from None
        busy = (cpu_busy_seconds() - cpu0) / ((time.perf_counter() - t0) * (os.cpu_count() or 1))
        after = {u: logged(f.info[home], u) for u in ROUTE_USERS}
    # Where the requests went: every one of bob's reached his home host's internal listener, none of alice's did.
    # (Her warm-up, readiness polls and upload are in the counts too.)
    crossed = {u: after[u] - before[u] for u in ROUTE_USERS}
    if crossed["alice"] != 0 or crossed["bob"] < n_api + n_file:
        raise BenchError(f"route: requests logged by {home}'s internal listener {crossed}: not the routes measured")
    sec = route_result(raw, {"local": front, "remote": home})
    sec.update(first_converge_s=round(first, 1), cpu_busy_fraction=round(busy, 2), channel_requests_logged=crossed)
    return sec


# -- report ---------------------------------------------------------------------------------------------------


def target(what: str, value: float, op: str, bound: float) -> Dict[str, Any]:
    ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[op]
    return {"what": what, "value": round(value, 3), "op": op, "bound": bound, "verdict": "PASS" if ok else "MISS"}


def print_table(sections: List[Dict[str, Any]]) -> None:
    print(f"{'case':<62}{'median s':>10}{'min s':>9}{'max s':>9}{'cpu busy':>9}{'ctl cpu s':>10}  n  changed")
    for sec in sections:
        tags = f" (site.yml --tags {sec['tags']})" if sec.get("tags") else ""
        print(f"[{sec['section']}]{tags}")
        digits = 4 if sec["section"] == "route" else 2  # milliseconds matter there
        for c in sec["cases"]:
            changed = ",".join(str(x) for x in c.get("changed", [])) or "-"
            busy = f"{c['cpu_busy_fraction']:.0%}" if "cpu_busy_fraction" in c else "-"
            ctl = f"{c['controller_cpu_s_median']:.1f}" if "controller_cpu_s_median" in c else "-"
            print(
                f"  {c['label']:<60}{c['median_s']:>10.{digits}f}{c['min_s']:>9.{digits}f}{c['max_s']:>9.{digits}f}"
                f"{busy:>9}{ctl:>10}"
                f"  {len(c['runs'])}  {changed}"
            )
            if "ssh_sessions_per_host" in c and "controller_cpu_s_per_host" in c:
                sessions = statistics.median(c["ssh_sessions_per_host"].values() or [0])
                print(
                    f"  {'':<4}per host: controller CPU {c['controller_cpu_s_per_host']:.2f} s, "
                    f"{sessions:g} SSH sessions" + (f", {c['tasks_per_run']} tasks" if "tasks_per_run" in c else "")
                )
    print()
    print("targets (ratios within this run):")
    for sec in sections:
        for t in sec["targets"]:
            print(f"  {t['verdict']:<5} {t['what']}: {t['value']:.2f} {t['op']} {t['bound']}")
    ratios = [r for sec in sections for r in sec.get("ratios", [])]
    if ratios:
        print("ratios (no target; within this run):")
        for r in ratios:
            print(
                f"  {r['what']}: {r['median_ratio']:.2f}x of the medians (+{r['added_ms_median']:.1f} ms), "
                f"p95 {r['p95_ratio']:.2f}x, paired {r['paired_median_ratio']:.2f}x, n={r['n']}"
            )


def write_results(results: Path, sections: List[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    for sec in sections:
        path = results / f"{sec['section']}.json" if sec["section"] != "guard" else results / "guard-summary.json"
        path.write_text(json.dumps(dict(sec, machine=meta), indent=2) + "\n")
    # The summary covers every section file present, so `--only X` refreshes X and keeps the others.
    summary: Dict[str, Any] = {"machine": meta, "sections": {}}
    for name in SECTIONS:
        path = results / (f"{name}.json" if name != "guard" else "guard-summary.json")
        if path.exists():
            data = json.loads(path.read_text())
            summary["sections"][name] = {"started": data["machine"].get("started"), "targets": data["targets"]}
            if "ratios" in data:
                summary["sections"][name]["ratios"] = data["ratios"]
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and one run each (a smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument(
        "--latency-repeat", type=int, help="interleaved bare/metalab start pairs to time (default 10; 3 with --quick)"
    )
    parser.add_argument(
        "--concurrent-rounds", type=int, help="rounds of ten users pressing Start at once (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--site-reruns",
        type=int,
        help="whole-site no-change reruns per configuration in the latency section (default --repeat; 0 with "
        "--quick; 0 skips them)",
    )
    parser.add_argument(
        "--rtt-ms",
        default="10,30",
        help="comma-separated round trips (ms) to add to SSH for the config and whole-site comparisons, besides "
        "the sandboxes' own (default 10,30; '' for none)",
    )
    parser.add_argument(
        "--runtime-sandbox",
        default="bm1",
        help="the sandbox of the latency and concurrent sections (default bm1; another name when other sessions on "
        "this machine use the bm names); taken down at the end",
    )
    parser.add_argument(
        "--route-sandboxes",
        default="bm1,bm2",
        help="the two sandboxes of the route section, the front door first (default bm1,bm2)",
    )
    parser.add_argument(
        "--route-requests", type=int, help="api/status samples per user (default 1000; 50 with --quick)"
    )
    parser.add_argument("--route-transfers", type=int, help="4 MiB transfers per user (default 100; 10 with --quick)")
    parser.add_argument(
        "--route-keep",
        action="store_true",
        help="leave the route section's sandboxes up (converged, runtimes running); a later run reuses them",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the ansible-playbook logs (path printed)")
    parser.add_argument("--profile", action="store_true", help="record the 10 slowest tasks of each rerun in the JSON")
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    try:
        route_names = route_sandboxes(args.route_sandboxes)
        route_n = route_counts(args.quick, args.route_requests, args.route_transfers)
    except ValueError as exc:
        parser.error(f"route: {exc}")
    if only - {"guard"} and os.geteuid() != 0:
        parser.error("the sandbox sections need root (labctl sandbox); run as root or use --only guard")
    try:
        rtts = sorted({float(x) for x in args.rtt_ms.split(",") if x.strip()} - {0.0})
    except ValueError:
        parser.error(f"--rtt-ms: not a list of numbers: {args.rtt_ms!r}")
    if any(r < 0 for r in rtts):
        parser.error(f"--rtt-ms: a round trip cannot be negative: {args.rtt_ms!r}")
    if args.quick:
        rtts = rtts[-1:]
    repeat = args.repeat or (1 if args.quick else 3)
    results = BENCH / "results" / ("quick" if args.quick else "")
    results.mkdir(parents=True, exist_ok=True)
    meta = dict(machine(), repeat=repeat, quick=args.quick, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    work = Path(tempfile.mkdtemp(prefix="metalab-bench-"))
    sections: List[Dict[str, Any]] = []

    def done(new: List[Dict[str, Any]]) -> None:
        """Each section is written as soon as it is measured: a later section that fails keeps it."""
        sections.extend(new)
        write_results(results, new, dict(meta, loadavg_end=list(os.getloadavg())))

    try:
        if "users" in only:
            print("users: 1 host per user count ...", file=sys.stderr, flush=True)
            (work / "users").mkdir()
            done([section_users(work / "users", repeat, args.quick)])
        if "hosts" in only or "config" in only:
            print("hosts/config: a fleet of sandboxes ...", file=sys.stderr, flush=True)
            (work / "fleet").mkdir()
            done(section_hosts(work / "fleet", repeat, args.quick, "config" in only, "hosts" in only, rtts))
        if {"latency", "concurrent"} & only:
            print("latency/concurrent: the whole site on one sandbox (builds the runtime image) ...", file=sys.stderr)
            (work / "latency").mkdir()
            latency_n = args.latency_repeat or (3 if args.quick else 10)
            rounds = args.concurrent_rounds or (1 if args.quick else 3)
            site = args.site_reruns if args.site_reruns is not None else (0 if args.quick else repeat)
            done(section_runtime(work / "latency", latency_n, rounds, site, rtts, sorted(only), args.runtime_sandbox))
        if "controller" in only:
            print("controller: 1 and 10 sandboxes ...", file=sys.stderr, flush=True)
            (work / "controller").mkdir()
            done([section_controller(work / "controller", repeat, args.quick)])
        if "guard" in only:
            done([section_guard(work, 3 if args.quick else max(repeat, 5), results)])
        if "route" in only:
            print(f"route: a two-host lab on {','.join(route_names)} (builds the runtime image on both) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            (work / "route").mkdir()
            done([section_route(work / "route", route_names, *route_n, keep=args.route_keep)])
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(f"logs kept in {work}", file=sys.stderr)
        return 1
    finally:
        meta["loadavg_end"] = list(os.getloadavg())
    if args.keep_logs:
        print(f"logs: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)

    print_table(sections)
    print(f"wrote {results}/*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
