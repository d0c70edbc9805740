"""The broker's config file (JSON, rendered by the portal role). Format: docs/portal.md."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from metalab.host.broker.home import AdapterConfig, parse_adapter
from metalab.host.broker.oidc import OidcConfig, parse_oidc
from metalab.host.broker.relay import ChannelConfig, Home, parse_channel
from metalab.host.guard.files import read_json_config
from metalab.host.guard.policy import parse_duration
from metalab.rules import USER_NAME

DEFAULT_CONFIG = "/etc/metalab/broker.json"
CONFIG_ENV = "METALAB_BROKER_CONFIG"


class BrokerConfigError(Exception):
    """The broker config is missing or invalid; the message names the bad entry."""


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: n=2**17, r=8, p=1 is 128 MiB and roughly 0.2-0.5 s per hash (OWASP's minimum for scrypt)."""

    n: int = 2**17
    r: int = 8
    p: int = 1


@dataclass(frozen=True)
class BrokerConfig:
    path: str
    socket: str = "/run/metalab/broker.sock"
    socket_group: Optional[str] = "metalab-portal"
    socket_mode: int = 0o660
    clients: Tuple[int, ...] = (0,)  # uids allowed to call (SO_PEERCRED): root and the portal account
    guard_config: Optional[str] = None  # None: the guard's default (/etc/metalab/guard.json or $METALAB_GUARD_CONFIG)
    passwords: str = "/etc/metalab/passwords.json"
    state: str = "/var/lib/metalab/broker/state.json"
    key: str = "/etc/metalab/broker.key"
    admins: Tuple[str, ...] = ()
    ticket_ttl: int = 12 * 3600
    lockout_failures: int = 5
    lockout_seconds: int = 15 * 60
    login_slowdown_max: int = 60  # the longest wait the per-name slow-down imposes (seconds)
    enroll_ttl: int = 72 * 3600
    min_password_length: int = 10
    quota_file: Optional[str] = None
    backup_config: Optional[str] = None  # metalab-backup's config (/etc/metalab/backup.json); None: no backups here
    scrypt: ScryptParams = field(default_factory=ScryptParams)
    max_hashing: int = 2  # concurrent password hashes (each takes 128*n*r bytes of memory)
    oidc: Optional[OidcConfig] = None  # single sign-on (metalab.host.broker.oidc); None: passwords only
    # Multi-host lab (metalab.host.broker.relay, .home): users homed elsewhere and the channel to their hosts (front
    # door), and the adapter serving the front door on this host (other lab hosts). Empty/None in a single-host lab.
    homes: Dict[str, Home] = field(default_factory=dict)
    channel: Optional[ChannelConfig] = None
    home_adapter: Optional[AdapterConfig] = None


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise BrokerConfigError(message)


def _uid(entry: Any) -> int:
    if isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0:
        return entry
    _expect(isinstance(entry, str) and bool(entry), f"clients: expected user names or uids, got {entry!r}")
    try:
        return pwd.getpwnam(entry).pw_uid
    except KeyError:
        raise BrokerConfigError(f"clients: no host account {entry!r} (create the portal account first)") from None


def _seconds(data: Mapping[str, Any], key: str, default: int) -> int:
    raw = data.get(key, default)
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise BrokerConfigError(f"{key}: {exc}") from None
    _expect(value > 0, f"{key}: must be longer than zero")
    return value


def _path(data: Mapping[str, Any], key: str, default: Optional[str]) -> Optional[str]:
    value = data.get(key, default)
    _expect(value is None or (isinstance(value, str) and os.path.isabs(value)), f"{key}: expected an absolute path")
    return value


def parse_config(data: Mapping[str, Any], path: str = "<config>") -> BrokerConfig:
    _expect(isinstance(data, Mapping), f"{path}: expected a JSON object")
    base = BrokerConfig(path=path)
    clients_raw = data.get("clients", ["root"])
    _expect(isinstance(clients_raw, list), "clients: expected a list of user names or uids")
    admins = data.get("admins", [])
    _expect(
        isinstance(admins, list) and all(isinstance(a, str) and USER_NAME.fullmatch(a) for a in admins),
        f"admins: expected a list of user names, got {admins!r}",
    )
    mode = data.get("socket_mode", "0660")
    try:
        socket_mode = int(mode, 8) if isinstance(mode, str) else int(mode)
    except ValueError:
        raise BrokerConfigError(f"socket_mode: expected an octal mode like '0660', got {mode!r}") from None
    _expect(not socket_mode & 0o007, f"socket_mode: {oct(socket_mode)} lets every local user reach the broker")
    scrypt_raw = data.get("scrypt", {}) or {}
    _expect(isinstance(scrypt_raw, Mapping), "scrypt: expected an object {n, r, p}")
    params = ScryptParams(
        n=int(scrypt_raw.get("n", base.scrypt.n)), r=int(scrypt_raw.get("r", base.scrypt.r)),
        p=int(scrypt_raw.get("p", base.scrypt.p)),
    )  # fmt: skip
    _expect(params.n >= 2**14 and params.n & (params.n - 1) == 0, "scrypt.n: expected a power of two >= 16384")
    _expect(params.r >= 8 and params.p >= 1, "scrypt: r must be >= 8 and p >= 1")
    failures = data.get("lockout_failures", base.lockout_failures)
    _expect(isinstance(failures, int) and failures >= 1, "lockout_failures: expected a positive integer")
    min_len = data.get("min_password_length", base.min_password_length)
    _expect(isinstance(min_len, int) and min_len >= 8, "min_password_length: expected an integer >= 8")
    try:
        oidc = parse_oidc(data.get("oidc"))
        homes, channel = parse_channel(data)
        home_adapter = parse_adapter(data.get("home_adapter"))
    except ValueError as exc:
        raise BrokerConfigError(str(exc)) from None
    group = data.get("socket_group", base.socket_group)
    _expect(group is None or (isinstance(group, str) and bool(group)), "socket_group: expected a group name")
    return BrokerConfig(
        path=path,
        socket=str(_path(data, "socket", base.socket)),
        socket_group=group,
        socket_mode=socket_mode,
        clients=tuple(sorted({_uid(c) for c in clients_raw})),
        guard_config=_path(data, "guard_config", None),
        passwords=str(_path(data, "passwords", base.passwords)),
        state=str(_path(data, "state", base.state)),
        key=str(_path(data, "key", base.key)),
        admins=tuple(admins),
        ticket_ttl=_seconds(data, "ticket_ttl", base.ticket_ttl),
        lockout_failures=failures,
        lockout_seconds=_seconds(data, "lockout", base.lockout_seconds),
        login_slowdown_max=_seconds(data, "login_slowdown_max", base.login_slowdown_max),
        enroll_ttl=_seconds(data, "enroll_ttl", base.enroll_ttl),
        min_password_length=min_len,
        quota_file=_path(data, "quota_file", None),
        backup_config=_path(data, "backup_config", None),
        scrypt=params,
        max_hashing=int(data.get("max_hashing", base.max_hashing)),
        oidc=oidc,
        homes=homes,
        channel=channel,
        home_adapter=home_adapter,
    )


def load_config(explicit: Optional[str] = None) -> BrokerConfig:
    path = explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return parse_config(read_json_config(path, BrokerConfigError, CONFIG_ENV), path)
