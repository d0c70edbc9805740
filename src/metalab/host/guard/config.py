"""The guard's config file (JSON, rendered by the session_limits role). Format: docs/session-limits.md."""

from __future__ import annotations

import os
import pwd
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from metalab.host.guard.files import read_json_config
from metalab.host.guard.policy import KINDS, Policy, build_policy
from metalab.rules import DEFAULT_IDLE_TIMEOUTS, GUARD_CONFIG, USER_NAME, parse_idle_timeouts

DEFAULT_CONFIG = GUARD_CONFIG
CONFIG_ENV = "METALAB_GUARD_CONFIG"

# Anchored with \Z, never ``$`` (which also accepts a trailing newline): .match() is a full match.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# A runtime's network: its own namespace, reached through slirp4netns only, whose connections the host's egress filter
# sees (roles/container_engine, docs/security.md) -- or none. Never host, a bridge (its traffic would bypass the
# filter), pasta, another container's or a path's namespace, nor slirp4netns options that reach the host's loopback
# or choose the outbound address.
_SLIRP_OPTION = r"(enable_ipv6|mtu|port_handler|cidr)=[A-Za-z0-9_./-]*"
NETWORK = re.compile(rf"slirp4netns(:{_SLIRP_OPTION}(,{_SLIRP_OPTION})*)?|none")
# podman run options an admin may add through runtime.extra_args, and whether each takes a value. Everything else
# (--privileged, --cap-add, --security-opt, --net/--network, --ipc, --pid, --uts, --userns, -v/--volume, --mount,
# --device, --group-add, --read-only=false, --tmpfs over the home, ... in any spelling) is refused: an allowlist is
# the only list that stays complete when podman learns a new option.
EXTRA_ARGS_ALLOWED = {
    "--cgroups": True,
    "--ulimit": True,
    "--passwd-entry": True,
    "--cpus": True,
    "--cpu-shares": True,
    "--memory": True,
    "--memory-reservation": True,
    "--memory-swap": True,
    "--pids-limit": True,
    "--shm-size": True,
    "--dns": True,
    "--dns-search": True,
    "--tz": True,
    "--stop-timeout": True,
    "--log-opt": True,
    "--label": True,
    "--annotation": True,
}
CGROUPS_VALUES = ("enabled", "disabled", "no-conmon", "split")
SIZE = re.compile(r"[1-9][0-9]*[kmg]?", re.IGNORECASE)


class ConfigError(Exception):
    """The config file is missing or invalid; the message names the bad entry."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    gpu: bool
    policy: Policy
    quota_bytes: int = 0  # her hard quota (0: none); the usage file's limit_bytes


@dataclass(frozen=True)
class Resources:
    cpus: Optional[str] = None
    memory: Optional[str] = None
    pids: Optional[int] = None


@dataclass(frozen=True)
class RuntimeConfig:
    engine: str = "podman"
    podman: str = "podman"
    image: str = "localhost/metalab-runtime:latest"
    command: List[str] = field(default_factory=lambda: ["supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"])
    network: str = "slirp4netns"
    extra_args: List[str] = field(default_factory=list)
    # Confinement (docs/security.md): a read-only root filesystem with size-limited tmpfs scratch space, a bounded
    # container log, and the JupyterLab socket directory on its own small tmpfs (guard.json sets its size; "", the
    # default here, keeps a plain directory, so that tests running as root mount nothing).
    read_only: bool = True
    tmpfs: Dict[str, str] = field(default_factory=lambda: {"/tmp": "1g", "/var/tmp": "256m"})
    log_max_size: str = "10m"
    socket_dir_size: str = ""
    resources: Dict[str, Resources] = field(default_factory=dict)
    resource_limits: bool = True
    grace_seconds: int = 30
    socket_root: str = "/run/metalab/sockets"
    frontdoor_group: str = "www-data"
    token_dir: str = "/etc/metalab/tokens"
    token_env: str = "JUPYTER_TOKEN"
    env_dir: str = "/run/metalab/env"
    env: Dict[str, str] = field(default_factory=dict)
    gpus: List[int] = field(default_factory=list)
    # Supplementary groups of GPU runtimes only: the group of the driver's device nodes (roles/nvidia_driver), for a
    # node that keeps the host's owner and mode inside the runtime (a CDI spec that names them). See docs/gpu.md.
    gpu_groups: List[int] = field(default_factory=list)
    # SELinux hosts (roles: lab_selinux_enabled): each user's runtimes at one MCS level of her own, socket tmpfs
    # labelled container_file_t. See docs/selinux.md.
    selinux: bool = False


@dataclass(frozen=True)
class UsageConfig:
    """Home usage (metalab.host.guard.homeusage): where the usage file goes and how it is measured."""

    file: str = "/var/lib/metalab/usage.json"
    # auto: the quota report where homes_mount is mounted with user quotas (xfs, ext4), else a walk of each home;
    # xfs, ext4: that report (a walk when it fails); none: always walk.
    quota_backend: str = "auto"
    homes_mount: str = "/srv/metalab/homes"
    walk_seconds: float = 60.0  # at most this long per home; a walk cut short is marked partial


@dataclass(frozen=True)
class Config:
    path: str
    ledger: str
    lock: str
    host: str
    users: Dict[str, User]
    runtime: RuntimeConfig
    policy_raw: Mapping[str, Any]
    default_policy: Policy
    log_file: Optional[str]
    metrics_path: str
    lock_timeout: float = 30.0
    # How long a guard run waits for the lock (cron starts one a minute): it waits rather than skip.
    run_lock_wait: float = 45.0
    drain_file: str = "/etc/metalab/drain"  # while it exists, no new runtimes start (metalab.host.guard.drain)
    # policy.idle_timeout: seconds without activity after which a running runtime is stopped, per kind (None = never).
    idle_timeout: Dict[str, Optional[int]] = field(default_factory=lambda: dict(DEFAULT_IDLE_TIMEOUTS))
    usage: UsageConfig = field(default_factory=UsageConfig)


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _user(name: str, raw: Any, policy_raw: Mapping[str, Any]) -> User:
    _expect(isinstance(name, str) and bool(USER_NAME.fullmatch(name)), f"users: invalid user name {name!r}")
    raw = raw or {}
    _expect(isinstance(raw, Mapping), f"users.{name}: expected an object, got {raw!r}")
    uid, gid, home = raw.get("uid"), raw.get("gid"), raw.get("home")
    if uid is None or gid is None or home is None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(f"users.{name}: no uid/gid/home in the config and no such host account") from None
        uid = entry.pw_uid if uid is None else uid
        gid = entry.pw_gid if gid is None else gid
        home = entry.pw_dir if home is None else home
    for key, value in (("uid", uid), ("gid", gid)):
        _expect(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"users.{name}.{key}: expected a positive integer (never root), got {value!r}",
        )
    _expect(isinstance(home, str) and os.path.isabs(home), f"users.{name}.home: expected an absolute path")
    gpu = raw.get("gpu", False)
    _expect(isinstance(gpu, bool), f"users.{name}.gpu: expected true or false, got {gpu!r}")
    try:
        policy = build_policy(policy_raw, {"limits": raw.get("limits"), "budgets": raw.get("budgets")})
    except ValueError as exc:
        raise ConfigError(f"users.{name}: {exc}") from None
    quota_bytes = raw.get("quota_bytes") or 0
    _expect(
        isinstance(quota_bytes, int) and not isinstance(quota_bytes, bool) and quota_bytes >= 0,
        f"users.{name}.quota_bytes: expected a number of bytes (0 or null: no quota), got {quota_bytes!r}",
    )
    return User(name=name, uid=int(uid), gid=int(gid), home=str(home), gpu=gpu, policy=policy, quota_bytes=quota_bytes)


def _usage(raw: Any) -> UsageConfig:
    raw = raw or {}
    _expect(isinstance(raw, Mapping), f"usage: expected an object, got {raw!r}")
    out = UsageConfig(**{k: raw[k] for k in ("file", "quota_backend", "homes_mount", "walk_seconds") if k in raw})
    for key in ("file", "homes_mount"):
        value = getattr(out, key)
        _expect(
            isinstance(value, str) and os.path.isabs(value), f"usage.{key}: expected an absolute path, got {value!r}"
        )
    _expect(
        out.quota_backend in ("auto", "xfs", "ext4", "none"),
        f"usage.quota_backend: expected auto, xfs, ext4 or none, got {out.quota_backend!r}",
    )
    _expect(
        isinstance(out.walk_seconds, (int, float)) and not isinstance(out.walk_seconds, bool) and out.walk_seconds > 0,
        f"usage.walk_seconds: expected seconds above 0, got {out.walk_seconds!r}",
    )
    return out


def _resources(raw: Any) -> Dict[str, Resources]:
    raw = raw or {}
    _expect(isinstance(raw, Mapping), "runtime.resources: expected an object keyed by kind")
    out: Dict[str, Resources] = {}
    for kind, spec in raw.items():
        _expect(kind in KINDS, f"runtime.resources: unknown kind {kind!r}; use cpu or gpu")
        _expect(isinstance(spec, Mapping), f"runtime.resources.{kind}: expected an object")
        pids = spec.get("pids")
        _expect(pids is None or (isinstance(pids, int) and pids > 0), f"runtime.resources.{kind}.pids: bad {pids!r}")
        cpus = spec.get("cpus")
        memory = spec.get("memory")
        out[kind] = Resources(
            cpus=None if cpus is None else str(cpus), memory=None if memory is None else str(memory), pids=pids
        )
    return out


def _str_list(raw: Any, what: str) -> List[str]:
    _expect(isinstance(raw, list) and all(isinstance(x, str) for x in raw), f"{what}: expected a list of strings")
    return list(raw)


def check_extra_args(extra: List[str]) -> None:
    """Refuse every podman option that is not in EXTRA_ARGS_ALLOWED, whichever way it is spelled."""
    i = 0
    while i < len(extra):
        arg = extra[i]
        name, eq, value = arg.partition("=")
        if name not in EXTRA_ARGS_ALLOWED:
            raise ConfigError(
                f"runtime.extra_args: {arg!r} would weaken runtime isolation or is unknown to metalab "
                f"(allowed: {', '.join(sorted(EXTRA_ARGS_ALLOWED))})"
            )
        if EXTRA_ARGS_ALLOWED[name] and not eq:
            _expect(i + 1 < len(extra), f"runtime.extra_args: {arg!r} needs a value")
            i += 1
            value = extra[i]
        if name == "--cgroups":
            _expect(value in CGROUPS_VALUES, f"runtime.extra_args: --cgroups {value!r}: use one of {CGROUPS_VALUES}")
        i += 1


def _check_network(network: Any) -> None:
    _expect(isinstance(network, str) and bool(network), "runtime.network: expected a network name")
    _expect(
        bool(NETWORK.fullmatch(network)),
        f"runtime.network: {network!r} is not allowed (runtimes get their own network namespace)",
    )


def _runtime(raw: Any) -> RuntimeConfig:
    raw = dict(raw or {})
    base = RuntimeConfig()
    engine = raw.get("engine", base.engine)
    _expect(engine == "podman", f"runtime.engine: unknown engine {engine!r}; use podman")
    network = raw.get("network", base.network)
    _check_network(network)
    command = raw.get("command", base.command)
    if isinstance(command, str):
        command = command.split()
    command = _str_list(command, "runtime.command")
    _expect(bool(command), "runtime.command: must not be empty")
    extra = _str_list(raw.get("extra_args", []), "runtime.extra_args")
    check_extra_args(extra)
    read_only = raw.get("read_only", base.read_only)
    _expect(isinstance(read_only, bool), "runtime.read_only: expected true or false")
    tmpfs = raw.get("tmpfs", base.tmpfs)
    _expect(isinstance(tmpfs, Mapping), "runtime.tmpfs: expected an object of container path: size")
    for path, size in tmpfs.items():
        _expect(
            isinstance(path, str) and os.path.isabs(path) and not path.startswith("/home"),
            f"runtime.tmpfs: {path!r}: expected an absolute path outside the home",
        )
        _expect(isinstance(size, str) and bool(SIZE.fullmatch(size)), f"runtime.tmpfs.{path}: bad size {size!r}")
    for key in ("log_max_size", "socket_dir_size"):
        value = raw.get(key, getattr(base, key))
        _expect(
            isinstance(value, str) and (value == "" or bool(SIZE.fullmatch(value))),
            f"runtime.{key}: expected a size such as 10m, got {value!r}",
        )
    env = raw.get("env", {}) or {}
    _expect(isinstance(env, Mapping), "runtime.env: expected an object of NAME: value")
    for key, value in env.items():
        _expect(bool(ENV_NAME.fullmatch(str(key))), f"runtime.env: invalid variable name {key!r}")
        _expect(isinstance(value, str) and "\n" not in value, f"runtime.env.{key}: expected a one-line string")
    gpus = raw.get("gpus", []) or []
    _expect(
        isinstance(gpus, list) and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus),
        f"runtime.gpus: expected a list of GPU indexes, got {gpus!r}",
    )
    _expect(len(set(gpus)) == len(gpus), f"runtime.gpus: duplicate GPU index in {gpus!r}")
    gpu_groups = raw.get("gpu_groups", []) or []
    _expect(
        isinstance(gpu_groups, list) and all(isinstance(g, int) and not isinstance(g, bool) for g in gpu_groups),
        f"runtime.gpu_groups: expected a list of group ids, got {gpu_groups!r}",
    )
    _expect(all(g > 0 for g in gpu_groups), f"runtime.gpu_groups: {gpu_groups!r}: never root's group (0)")
    grace = raw.get("grace_seconds", base.grace_seconds)
    _expect(isinstance(grace, int) and grace >= 0, f"runtime.grace_seconds: expected seconds, got {grace!r}")
    limits = raw.get("resource_limits", True)
    _expect(isinstance(limits, bool), "runtime.resource_limits: expected true or false")
    selinux = raw.get("selinux", False)
    _expect(isinstance(selinux, bool), "runtime.selinux: expected true or false")
    token_env = raw.get("token_env", base.token_env)
    _expect(bool(ENV_NAME.fullmatch(str(token_env))), f"runtime.token_env: invalid variable name {token_env!r}")
    paths = {}
    for key in ("socket_root", "token_dir", "env_dir"):
        value = raw.get(key, getattr(base, key))
        _expect(isinstance(value, str) and os.path.isabs(value), f"runtime.{key}: expected an absolute path")
        paths[key] = value
    return RuntimeConfig(
        engine=engine,
        podman=str(raw.get("podman", base.podman)),
        image=str(raw.get("image", base.image)),
        command=command,
        network=network,
        extra_args=extra,
        read_only=read_only,
        tmpfs={str(k): str(v) for k, v in tmpfs.items()},
        log_max_size=str(raw.get("log_max_size", base.log_max_size)),
        socket_dir_size=str(raw.get("socket_dir_size", base.socket_dir_size)),
        resources=_resources(raw.get("resources")),
        resource_limits=limits,
        grace_seconds=grace,
        frontdoor_group=str(raw.get("frontdoor_group", base.frontdoor_group)),
        token_env=str(token_env),
        env={str(k): str(v) for k, v in env.items()},
        gpus=sorted(gpus),
        gpu_groups=sorted(set(gpu_groups)),
        selinux=selinux,
        **paths,
    )


def parse_config(data: Mapping[str, Any], path: str = "<config>") -> Config:
    _expect(isinstance(data, Mapping), f"{path}: expected a JSON object")
    policy_raw = data.get("policy", {}) or {}
    _expect(isinstance(policy_raw, Mapping), "policy: expected an object")
    try:
        default_policy = build_policy(policy_raw)
        idle_timeout = parse_idle_timeouts(policy_raw.get("idle_timeout"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    users_raw = data.get("users", {}) or {}
    _expect(isinstance(users_raw, Mapping), "users: expected an object keyed by user name")
    users = {name: _user(name, raw, policy_raw) for name, raw in users_raw.items()}
    uids: Dict[int, str] = {}
    for user in users.values():
        _expect(user.uid not in uids, f"users.{user.name}.uid: {user.uid} is also the uid of {uids.get(user.uid)}")
        uids[user.uid] = user.name
    lock_timeout = data.get("lock_timeout", 30)
    run_lock_wait = data.get("run_lock_wait", 45)
    _expect(
        isinstance(run_lock_wait, (int, float)) and 0 <= run_lock_wait <= 55,
        "run_lock_wait: expected seconds, at most 55 (cron starts a guard run every minute)",
    )
    drain_file = data.get("drain_file") or "/etc/metalab/drain"
    _expect(isinstance(drain_file, str) and os.path.isabs(drain_file), "drain_file: expected an absolute path")
    _expect(isinstance(lock_timeout, (int, float)) and lock_timeout >= 0, "lock_timeout: expected seconds")
    return Config(
        path=path,
        ledger=str(data.get("ledger", "/var/lib/metalab/ledger.sqlite")),
        lock=str(data.get("lock", "/run/metalab/guard.lock")),
        host=str(data.get("host") or socket.gethostname()),
        users=users,
        runtime=_runtime(data.get("runtime")),
        policy_raw=policy_raw,
        default_policy=default_policy,
        log_file=data.get("log_file"),
        metrics_path=str(data.get("metrics_path", "/var/lib/prometheus/node-exporter/metalab.prom")),
        lock_timeout=float(lock_timeout),
        run_lock_wait=float(run_lock_wait),
        drain_file=drain_file,
        idle_timeout=idle_timeout,
        usage=_usage(data.get("usage")),
    )


def config_path(explicit: Optional[str] = None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_config(explicit: Optional[str] = None) -> Config:
    path = config_path(explicit)
    return parse_config(read_json_config(path, ConfigError, CONFIG_ENV), path)
