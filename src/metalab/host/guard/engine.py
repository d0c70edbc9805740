"""Container engine: podman driven with argv lists (never a shell), behind a small interface.

The runner is injectable: production uses ``subprocess_runner``; tests and benchmarks pass a simulated podman
(``metalab.host.guard.simulated``) that interprets the same argv, so the argv built here is what the tests check.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from metalab.host.guard.config import RuntimeConfig

CONTAINER_HOME = "/home/studio-lab-user"
CONTAINER_SOCKDIR = "/run/lab"
# SELinux's MCS categories (c0..c1023): a runtime's level is a pair of them.
MCS_CATEGORIES = 1024
HOSTNAME = "studio-lab"
LABEL_USER = "metalab.user"
LABEL_KIND = "metalab.kind"
LABEL_GPU = "metalab.gpu"
LABEL_SESSION = "metalab.session"

# Writes $0 (the message, passed as an argument: never interpolated into the script) to every terminal.
TERMINAL_SCRIPT = 'for t in /dev/pts/[0-9]*; do [ -c "$t" ] && echo "$0" > "$t"; done 2>/dev/null; exit 0'


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], Result]


def subprocess_runner(argv: Sequence[str], timeout: float) -> Result:
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: timed out after {timeout:.0f}s")
    return Result(proc.returncode, proc.stdout, proc.stderr)


class EngineError(Exception):
    """The container engine failed; the message includes its error output."""


class NameInUse(EngineError):
    """``podman run`` refused: a container of that name exists already."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    user: str
    uid: int
    gid: int
    home: str
    sockdir: str
    kind: str
    gpu: Optional[int]
    session: int
    env_file: str


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    running: bool
    state: str
    labels: Dict[str, str] = field(default_factory=dict)

    @property
    def session(self) -> Optional[int]:
        try:
            return int(self.labels.get(LABEL_SESSION, ""))
        except ValueError:
            return None


def container_name(user: str) -> str:
    return f"metalab-{user}"


def _no_such_container(res: Result) -> bool:
    text = (res.stderr + res.stdout).lower()
    return "no such container" in text or "no container with name or id" in text


class PodmanEngine:
    def __init__(self, runtime: RuntimeConfig, runner: Runner = subprocess_runner) -> None:
        self.cfg = runtime
        self.runner = runner

    def _run(self, argv: List[str], timeout: float = 60.0) -> Result:
        return self.runner([self.cfg.podman, *argv], timeout)

    @staticmethod
    def selinux_level(uid: int) -> str:
        """One MCS level per lab account, the same at every start: podman would pick a new pair of categories for
        each container, and the files she writes in her home (which get the writer's level) would be out of reach
        of her next runtime. Distinct for up to 523,776 accounts (every pair c_a,c_b with a < b)."""
        index = (uid - 1000) % (MCS_CATEGORIES * (MCS_CATEGORIES - 1) // 2)
        first = 0
        while index >= MCS_CATEGORIES - 1 - first:
            index -= MCS_CATEGORIES - 1 - first
            first += 1
        return f"s0:c{first},c{first + 1 + index}"

    def run_argv(self, spec: ContainerSpec) -> List[str]:
        """The ``podman run`` argv (without the podman binary). Secrets only travel in the env file."""
        cfg = self.cfg
        argv = [
            "run",
            "-d",
            "--name",
            spec.name,
            "--label",
            f"{LABEL_USER}={spec.user}",
            "--label",
            f"{LABEL_KIND}={spec.kind}",
            "--label",
            f"{LABEL_GPU}={'' if spec.gpu is None else spec.gpu}",
            "--label",
            f"{LABEL_SESSION}={spec.session}",
            "--user",
            f"{spec.uid}:{spec.gid}",
            "--hostname",
            HOSTNAME,
            f"--network={cfg.network}",
            "--cap-drop=ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        if cfg.selinux:
            argv += ["--security-opt", f"label=level:{self.selinux_level(spec.uid)}"]
        if cfg.read_only:
            # Nothing she writes outside her home lands on the host's disks: the image is read-only, scratch space is
            # size-limited tmpfs (memory, counted in the runtime's memory limit where cgroups enforce one).
            argv += ["--read-only", "--read-only-tmpfs=false"]
            for path, size in sorted(cfg.tmpfs.items()):
                argv += ["--tmpfs", f"{path}:rw,nosuid,nodev,size={size},mode=1777"]
        if cfg.log_max_size:
            # What the runtime prints (JupyterLab's log, or anything written to PID 1's stdout) is kept bounded.
            argv += ["--log-driver=k8s-file", f"--log-opt=max-size={cfg.log_max_size}"]
        if cfg.resource_limits:
            res = cfg.resources.get(spec.kind)
            if res is not None:
                if res.cpus is not None:
                    argv.append(f"--cpus={res.cpus}")
                if res.memory is not None:
                    argv.append(f"--memory={res.memory}")
                if res.pids is not None:
                    argv.append(f"--pids-limit={res.pids}")
        if spec.gpu is not None:
            argv += ["--device", f"nvidia.com/gpu={spec.gpu}"]
            # Her uid and primary group stay; the device group only lets her open the GPU nodes where they keep the
            # host's root:<group> 0660 (podman otherwise gives a --user container's devices to that user).
            for gid in cfg.gpu_groups:
                argv += ["--group-add", str(gid)]
        argv += list(cfg.extra_args)
        argv += [
            "-v",
            f"{spec.home}:{CONTAINER_HOME}",
            "-v",
            f"{spec.sockdir}:{CONTAINER_SOCKDIR}",
            "--workdir",
            CONTAINER_HOME,
            "--env-file",
            spec.env_file,
            cfg.image,
            *cfg.command,
        ]
        return argv

    def start(self, spec: ContainerSpec) -> str:
        res = self._run(self.run_argv(spec), timeout=300.0)
        if res.returncode != 0:
            if "is already in use" in res.stderr:
                raise NameInUse(f"podman run {spec.name}: {res.stderr.strip()[-500:]}")
            raise EngineError(f"podman run {spec.name} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        return res.stdout.strip()

    def stop(self, name: str, grace: Optional[int] = None) -> None:
        """Graceful, idempotent: SIGTERM (supervisord ends JupyterLab and kernels), grace period, kill, remove."""
        grace = self.cfg.grace_seconds if grace is None else grace
        res = self._run(["stop", "--ignore", "--time", str(grace), name], timeout=grace + 60.0)
        if res.returncode != 0 and not _no_such_container(res):
            raise EngineError(f"podman stop {name} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        self.remove(name)

    def remove(self, name: str) -> None:
        res = self._run(["rm", "-f", "--ignore", name], timeout=120.0)
        if res.returncode != 0 and not _no_such_container(res):
            raise EngineError(f"podman rm {name} failed ({res.returncode}): {res.stderr.strip()[-500:]}")

    def list(self) -> Dict[str, ContainerInfo]:
        """metalab containers (running or not), by name."""
        res = self._run(["ps", "-a", "--filter", f"label={LABEL_USER}", "--format", "json"])
        if res.returncode != 0:
            raise EngineError(f"podman ps failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        return parse_ps(res.stdout)

    def notify(self, name: str, uid: int, gid: int, message: str) -> bool:
        """Write ``message`` to every terminal of the runtime. False when that failed (logged by the caller)."""
        argv = ["exec", "--user", f"{uid}:{gid}", name, "sh", "-c", TERMINAL_SCRIPT, message]
        return self._run(argv, timeout=30.0).returncode == 0


def parse_ps(stdout: str) -> Dict[str, ContainerInfo]:
    """Parse ``podman ps -a --format json`` (podman 3.x to 5.x)."""
    text = stdout.strip()
    if not text:
        return {}
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError(f"podman ps printed something that is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise EngineError("podman ps --format json: expected a list")
    out: Dict[str, ContainerInfo] = {}
    for item in items:
        names = item.get("Names") or item.get("Name") or []
        if isinstance(names, str):
            names = [names]
        if not names:
            continue
        state = item.get("State", "")
        if not isinstance(state, str):  # very old podman: numeric state; 3 = running
            state = "running" if state == 3 else str(state)
        labels = item.get("Labels") or {}
        name = str(names[0]).lstrip("/")
        out[name] = ContainerInfo(
            name=name,
            running=state.lower() == "running",
            state=state.lower(),
            labels={str(k): str(v) for k, v in labels.items()},
        )
    return out
