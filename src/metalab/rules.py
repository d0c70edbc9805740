# Copyright: metalab contributors
# Apache-2.0
"""metalab's rules, once: names, sizes, durations, supported platforms, lab-wide defaults, the lab_users list.

Every layer reads its rules from here: labctl on the controller, the collection's plugins (as
``ansible_collections.metalab.lab.plugins.module_utils.rules``, a link to this file, so Ansible ships it to the
hosts with the modules), the guard and the broker (root on a lab host) and the portal (unprivileged). So this
module imports the standard library only, and nothing here reads a file, the clock or the environment.

This file is over 400 lines because two of the rules are large: the session settings (build_policy: limits,
budgets, warnings, presets) and the lab_users resolution (validate_users, and the lab layout: validate_layout,
home_hosts). They stay next to the duration, name, size and uid rules they apply; one file is also what lets
plugins/module_utils/rules.py be a single link.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# ---------------------------------------------------------------------------------------------------------------
# Lab-wide defaults (the roles' defaults and the guard's fallbacks say the same; tests/unit/rules checks it).

DEFAULT_USERS_PREFIX = "lab-"  # host account = prefix + lab user name
DEFAULT_QUOTA = "15G"  # SageMaker Studio Lab's 15 GB of persistent storage
DEFAULT_HOMES_ROOT = "/srv/metalab/homes"
GUARD_CONFIG = "/etc/metalab/guard.json"
USERS_GROUP = "labusers"

# ---------------------------------------------------------------------------------------------------------------
# Names

# A lab user's name: 1-31 characters (the host account adds a prefix and must stay within 32).
USER_NAME_PATTERN = r"[a-z_][a-z0-9_-]{0,30}"
# Matched in full: "$" alone would accept a trailing newline.
USER_NAME = re.compile(r"\A" + USER_NAME_PATTERN + r"\Z")
USER_NAME_HELP = "use 1-31 characters, lowercase letters, digits, _ and -, starting with a letter or _"
USERS_PREFIX = re.compile(r"\A[a-z_][a-z0-9_-]*\Z")
MAX_LOGIN_LEN = 32  # useradd refuses longer names on the supported platforms
# Refused even though the prefix keeps host accounts apart: these names confuse people and logs.
RESERVED_NAMES = frozenset(
    [
        "root",
        "admin",
        "administrator",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "nogroup",
        "systemd",
        "sshd",
        "sudo",
        "wheel",
        "adm",
        "staff",
        "users",
        "operator",
        "shadow",
        "docker",
        "podman",
        "lxd",
        "nginx",
        "metalab",
        "studio-lab-user",
        "ubuntu",
        "debian",
        "ec2-user",
        "ansible",
    ]
)
MIN_UID = 1000
MAX_UID = 4294967294
NOBODY_UID = 65534


def is_user_name(value: object) -> bool:
    return isinstance(value, str) and USER_NAME.match(value) is not None


# ---------------------------------------------------------------------------------------------------------------
# Sizes: binary, 15G = 15 GiB, the way xfs_quota, setquota and SageMaker Studio Lab's "15 GB" mean it.
# Accepted: a number (decimals allowed) and one unit K, M, G or T, optionally followed by "iB"
# (15G, 15GiB, 500M, 1.5T). "GB" is refused on purpose: it would suggest powers of ten.

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])(iB)?\s*$")
SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class SizeError(ValueError):
    """Not a size metalab understands."""


def parse_size(value: Any) -> int:
    """'15G' -> bytes. Raises SizeError with the accepted forms."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SizeError("not a size: " + repr(value) + " (use e.g. 500M, 15G, 1.5T)")
    match = _SIZE_RE.match(str(value))
    if not match:
        raise SizeError(
            "not a size: "
            + repr(value)
            + " (use a number and one binary unit K, M, G or T, e.g. 500M, 15G, 1.5T or 15GiB)"
        )
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
    if size <= 0:
        raise SizeError("size must be larger than zero: " + repr(value))
    return size


def human_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        factor = SIZE_UNITS[unit]
        if size >= factor and size % factor == 0:
            return str(size // factor) + unit
    for unit in ("T", "G", "M", "K"):
        if size >= SIZE_UNITS[unit]:
            return f"{size / SIZE_UNITS[unit]:.1f}{unit}"
    return str(size)


# ---------------------------------------------------------------------------------------------------------------
# Durations

_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+)([a-zA-Z]*)")
_DURATION_HELP = "expected e.g. 12h, 90m, 1h30m, 45s or seconds"


def parse_duration(value: object) -> int:
    """Parse "12h", "90m", "1h30m", "45s", "2d" or an integer (seconds) into seconds.

    Raises ValueError naming the bad value for anything else (unknown unit, negative, empty, bool).
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    if not text:
        raise ValueError(f"invalid duration {value!r}: empty")
    total = 0
    pos = 0
    seen = set()
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        number, unit = match.groups()
        if unit not in _DURATION_UNITS:
            raise ValueError(f"invalid duration {value!r}: unknown unit {unit or '(none)'!r}; use d, h, m or s")
        if unit in seen:
            raise ValueError(f"invalid duration {value!r}: unit {unit!r} given twice")
        seen.add(unit)
        total += int(number) * _DURATION_UNITS[unit]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}")
    return total


def format_duration(seconds: float) -> str:
    """Human form: 4h05m, 12m30s, 45s (negative values are shown as 0s)."""
    s = max(0, int(round(seconds)))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def format_clock(epoch: float) -> str:
    """HH:MM in UTC, the form used in refusal messages ("budget exhausted until 17:05 UTC")."""
    return time.strftime("%H:%M", time.gmtime(epoch))


def format_iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# ---------------------------------------------------------------------------------------------------------------
# Runtimes

KINDS = ("cpu", "gpu")
WINDOW = 24 * 3600  # budgets are rolling 24-hour windows

# ---------------------------------------------------------------------------------------------------------------
# Session settings: limits, budgets, warnings and presets (lab_session_*), as the guard applies them


DEFAULT_LIMITS = {"cpu": 12 * 3600, "gpu": 4 * 3600}
DEFAULT_WARNINGS: Tuple[int, ...] = (15 * 60, 5 * 60)
DEFAULT_MIN_START = 5 * 60

PRESETS: Dict[str, Dict[str, Dict[str, Optional[int]]]] = {
    # SageMaker Studio Lab as of 2023: 4 h per session, 8 h CPU and 4 h GPU per 24 h.
    "studiolab-2023": {
        "limits": {"cpu": 4 * 3600, "gpu": 4 * 3600},
        "budgets": {"cpu": 8 * 3600, "gpu": 4 * 3600},
    },
}


@dataclass(frozen=True)
class Policy:
    """Effective policy for one user: limits and budgets in seconds per kind (budget None = unlimited)."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    budgets: Mapping[str, Optional[int]] = field(default_factory=lambda: {"cpu": None, "gpu": None})
    warnings: Tuple[int, ...] = DEFAULT_WARNINGS
    min_start: int = DEFAULT_MIN_START

    def limit(self, kind: str) -> int:
        return int(self.limits[kind])

    def budget(self, kind: str) -> Optional[int]:
        value = self.budgets.get(kind)
        return None if value is None else int(value)


def _durations_by_kind(raw: object, what: str, allow_none: bool) -> Dict[str, Optional[int]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected a mapping of kind to duration, got {raw!r}")
    out: Dict[str, Optional[int]] = {}
    for kind, value in raw.items():
        if kind not in KINDS:
            raise ValueError(f"{what}: unknown runtime kind {kind!r}; use cpu or gpu")
        if value is None or value is False:
            if not allow_none:
                raise ValueError(f"{what}.{kind}: a session limit is required")
            out[kind] = None
            continue
        try:
            out[kind] = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{what}.{kind}: {exc}") from None
        if out[kind] == 0:
            raise ValueError(f"{what}.{kind}: must be greater than zero (use null for no budget)")
    return out


def build_policy(raw: Optional[Mapping[str, object]], override: Optional[Mapping[str, object]] = None) -> Policy:
    """Build the effective Policy from the config's ``policy`` section and a user's overrides.

    Order: defaults < preset < policy.limits/budgets < user limits/budgets.
    """
    raw = raw or {}
    override = override or {}
    limits: Dict[str, int] = dict(DEFAULT_LIMITS)
    budgets: Dict[str, Optional[int]] = {"cpu": None, "gpu": None}
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"policy.preset: unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        limits.update({k: int(v) for k, v in PRESETS[str(preset)]["limits"].items() if v is not None})
        budgets.update(PRESETS[str(preset)]["budgets"])
    for source, prefix in ((raw, "policy"), (override, "user override")):
        for kind, value in _durations_by_kind(source.get("limits"), f"{prefix} limits", False).items():
            assert value is not None
            limits[kind] = value
        budgets.update(_durations_by_kind(source.get("budgets"), f"{prefix} budgets", True))
    warnings_raw = raw.get("warnings", None)
    if warnings_raw is None:
        warnings = DEFAULT_WARNINGS
    else:
        if not isinstance(warnings_raw, (list, tuple)):
            raise ValueError(f"policy.warnings: expected a list of durations, got {warnings_raw!r}")
        try:
            warnings = tuple(sorted({parse_duration(w) for w in warnings_raw}, reverse=True))
        except ValueError as exc:
            raise ValueError(f"policy.warnings: {exc}") from None
    try:
        min_start = parse_duration(raw.get("min_start", DEFAULT_MIN_START))
    except ValueError as exc:
        raise ValueError(f"policy.min_start: {exc}") from None
    for kind, budget in budgets.items():
        if budget is not None and budget < min_start:
            raise ValueError(f"budgets.{kind}: {budget}s is shorter than policy.min_start ({min_start}s)")
    return Policy(limits=limits, budgets=budgets, warnings=warnings, min_start=min_start)


# Idle culling (lab_session_idle_timeout): a running runtime with no activity for this long is stopped (None = never).
# GPU runtimes hold a scarce device, so theirs is shorter.
DEFAULT_IDLE_TIMEOUTS: Dict[str, Optional[int]] = {"cpu": 3 * 3600, "gpu": 3600}


def parse_idle_timeouts(raw: object, what: str = "policy.idle_timeout") -> Dict[str, Optional[int]]:
    """The idle timeout per kind: defaults < ``raw`` ({kind: duration or null}). ValueError names the bad entry."""
    out: Dict[str, Optional[int]] = dict(DEFAULT_IDLE_TIMEOUTS)
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected a mapping of kind (cpu, gpu) to a duration or null, got {raw!r}")
    for kind, value in raw.items():
        if kind not in KINDS:
            raise ValueError(f"{what}: unknown runtime kind {kind!r}; use cpu or gpu")
        if value is None:
            out[kind] = None
            continue
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{what}.{kind}: {exc}") from None
        if seconds == 0:
            raise ValueError(f"{what}.{kind}: must be greater than zero (use null for no idle timeout)")
        out[kind] = seconds
    return out


# ---------------------------------------------------------------------------------------------------------------
# Platforms: distribution -> supported major versions (the facts' distribution and distribution_major_version).

PLATFORMS: Dict[str, tuple] = {"Debian": ("12",), "Ubuntu": ("22", "24"), "Amazon": ("2023",)}
PLATFORMS_HELP = "Ubuntu 22.04/24.04, Debian 12, Amazon Linux 2023"
# Platforms refused with a reason of their own.
REFUSED_PLATFORMS = {
    "Amazon_2": "Amazon Linux 2 is past its end of support and its Python is too old for current ansible-core; "
    "use Amazon Linux 2023",
}


class NetworkListError(ValueError):
    pass


def networks_by_family(entries: object, name: str, example: str, everything: str) -> Dict[str, List[str]]:
    """A list of addresses or CIDR networks (an inventory setting called NAME) -> {"ipv4": [...], "ipv6": [...]},
    each sorted with overlapping and adjacent networks merged (nftables interval sets refuse overlaps).

    Raises NetworkListError naming the entry's index and value: not a list, not an address or network (EXAMPLE is
    the hint), host bits set (with the network meant), or a /0 (EVERYTHING says why that is refused here)."""
    if entries is None:
        entries = []
    if not isinstance(entries, (list, tuple)):
        raise NetworkListError(f"{name} must be a list of addresses or networks ({example}), not {entries!r}")
    v4: List[ipaddress.IPv4Network] = []
    v6: List[ipaddress.IPv6Network] = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            raise NetworkListError(f"{where}: {entry!r} is not an address or network; write one such as {example}")
        try:
            net = ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ipaddress.ip_network(entry.strip(), strict=False)}?)"
            raise NetworkListError(
                f"{where}: {entry!r} is not an address or network: {exc}{hint}; write one such as {example}"
            ) from None
        if net.prefixlen == 0:
            raise NetworkListError(f"{where}: {entry!r} {everything}")
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    return {
        "ipv4": [str(n) for n in ipaddress.collapse_addresses(v4)],
        "ipv6": [str(n) for n in ipaddress.collapse_addresses(v6)],
    }


def platform_problem(distribution: str, major_version: str, version: str = "") -> Optional[str]:
    """None when metalab supports this platform, else the message that says why not."""
    key = f"{distribution}_{major_version}"
    if key in REFUSED_PLATFORMS:
        return REFUSED_PLATFORMS[key]
    if major_version in PLATFORMS.get(distribution, ()):
        return None
    return f"{distribution} {version or major_version} is not supported by metalab; supported: {PLATFORMS_HELP}"


# GPU runtimes get their GPU through CDI (--device nvidia.com/gpu=N); podman reads CDI specs from 4.1 on.
CDI_MIN_PODMAN = (4, 1)
_PODMAN_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
CDI_WAY_OUT = (
    "use Ubuntu 24.04 (podman 4.9) or install podman >= 4.1 from another source, or keep the host CPU-only "
    "(nvidia_container_toolkit_enabled: false and session_limits_gpus: [])"
)


def podman_cdi_problem(version_output: str) -> Optional[str]:
    """None when this podman (`podman --version`'s output) can give a runtime a GPU by CDI, else why not."""
    found = _PODMAN_VERSION.search(version_output or "")
    if found is None:
        return f"cannot read podman's version from {version_output.strip()!r}: GPU runtimes need podman >= 4.1 (CDI)"
    if (int(found.group(1)), int(found.group(2))) >= CDI_MIN_PODMAN:
        return None
    return (
        f"podman {found.group(0)} has no CDI support and GPU runtimes need it (podman >= 4.1): "
        f"no GPU runtime could start; {CDI_WAY_OUT}"
    )


# ---------------------------------------------------------------------------------------------------------------
# The lab_users list, resolved: validated and normalised once, then read by every role, template and tool.

USER_KEYS = ("name", "quota", "gpu", "state", "uid", "comment", "email", "host")
# An e-mail address (lab_users' optional ``email``, the sign-up form): one @, a dotted domain, no spaces, quotes,
# angle brackets or control characters, at most 254 characters. Deliberately plain: what a mail relay accepts.
EMAIL = re.compile(
    r"\A[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)
MAX_EMAIL_LEN = 254


def email_problem(value: Any) -> Optional[str]:
    """None for a usable e-mail address, else why not (names no one else's data)."""
    if not isinstance(value, str) or not value:
        return "e-mail must be an address like name@example.org"
    if len(value) > MAX_EMAIL_LEN or not EMAIL.match(value) or ".." in value or value.startswith("."):
        return "e-mail " + repr(value[:80]) + " is not a valid address (expected name@example.org)"
    return None


USER_STATES = ("present", "absent")


def _label(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if name is None:
        return "lab_users[" + str(index) + "]"
    return "lab_users[" + str(index) + "] (name " + repr(name) + ")"


def _name_problem(name: Any, prefix: str) -> Optional[str]:
    if not is_user_name(name):
        return "invalid name " + repr(name) + ": " + USER_NAME_HELP
    if name in RESERVED_NAMES:
        return "name " + repr(name) + " is reserved"
    if len(prefix + name) > MAX_LOGIN_LEN:
        return "host account " + repr(prefix + name) + " is longer than " + str(MAX_LOGIN_LEN) + " characters"
    return None


def _uid_problem(uid: Any) -> Optional[str]:
    if uid is None:
        return None
    if isinstance(uid, bool) or not isinstance(uid, int) or not MIN_UID <= uid <= MAX_UID or uid == NOBODY_UID:
        return "uid must be an integer from " + str(MIN_UID) + " (not " + str(NOBODY_UID) + "), got " + repr(uid)
    return None


def validate_users(
    entries: Any,
    *,
    default_quota: Any = DEFAULT_QUOTA,
    prefix: str = DEFAULT_USERS_PREFIX,
    homes_root: str = DEFAULT_HOMES_ROOT,
    volume_size: Optional[int] = None,
    require_quota: bool = False,
) -> Dict[str, Any]:
    """Check the lab_users list; return {"users": [normalised], "errors": [...], "warnings": [...]}.

    Normalised entry: name, login (prefix + name), home (homes_root/name), quota (the text), quota_bytes, gpu,
    state, uid (or None), comment. Nothing is changed anywhere; the caller fails when errors is not empty.
    With ``volume_size``, the quotas are also checked against the homes volume (volume_problems).
    """
    errors: List[str] = []
    warnings: List[str] = []
    users: List[Dict[str, Any]] = []
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        return {
            "users": [],
            "errors": ["lab_users must be a list of entries, got " + type(entries).__name__],
            "warnings": [],
        }
    if not isinstance(prefix, str) or not USERS_PREFIX.match(prefix or "x"):
        errors.append("lab_users_prefix " + repr(prefix) + " is not POSIX-safe (lowercase letters, digits, _ and -)")
        prefix = str(prefix)
    try:
        default_bytes: Optional[int] = parse_size(default_quota) if default_quota not in (None, "") else None
    except SizeError as exc:
        errors.append("lab_users_default_quota: " + str(exc))
        default_bytes = None

    seen_names: Dict[str, int] = {}
    seen_uids: Dict[int, int] = {}
    for index, entry in enumerate(entries):
        where = _label(index, entry)
        if not isinstance(entry, Mapping):
            errors.append(where + ": must be a mapping with at least a name, got " + type(entry).__name__)
            continue
        problems: List[str] = []
        unknown = sorted(str(k) for k in entry if k not in USER_KEYS)
        if unknown:
            problems.append("unknown key(s) " + ", ".join(unknown) + " (allowed: " + ", ".join(USER_KEYS) + ")")
        name = entry.get("name")
        name_problem = _name_problem(name, prefix)
        if name_problem:
            problems.append(name_problem)
        elif name in seen_names:
            problems.append("duplicate name, already used by lab_users[" + str(seen_names[name]) + "]")
        state = entry.get("state", "present")
        if state not in USER_STATES:
            problems.append("state must be present or absent, got " + repr(state))
        gpu = entry.get("gpu", False)
        if not isinstance(gpu, bool):
            problems.append("gpu must be true or false, got " + repr(gpu))
        uid = entry.get("uid")
        uid_problem = _uid_problem(uid)
        if uid_problem:
            problems.append(uid_problem)
        elif uid is not None and uid in seen_uids:
            problems.append("duplicate uid " + str(uid) + ", already used by lab_users[" + str(seen_uids[uid]) + "]")
        quota_text = entry.get("quota")
        quota_bytes: Optional[int] = None
        if quota_text is None:
            if require_quota and default_bytes is None:
                problems.append("no quota and no lab_users_default_quota")
            quota_bytes = default_bytes
            quota_text = default_quota if default_bytes is not None else None
        else:
            try:
                quota_bytes = parse_size(quota_text)
            except SizeError as exc:
                problems.append("invalid quota: " + str(exc))
        comment = entry.get("comment", "")
        if comment is None:
            comment = ""
        if not isinstance(comment, str) or ":" in comment or "\n" in comment:
            problems.append("comment must be text without ':' or newlines")
        email = entry.get("email")
        if email is not None and email_problem(email):
            problems.append(str(email_problem(email)))
        host = entry.get("host")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            problems.append("host must be the inventory name of a lab host, got " + repr(host))
        if problems:
            errors.extend(where + ": " + p for p in problems)
        if isinstance(name, str) and name not in seen_names:
            seen_names[name] = index
        if isinstance(uid, int) and not isinstance(uid, bool) and uid not in seen_uids:
            seen_uids[uid] = index
        if problems:
            continue
        users.append(
            {
                "name": name,
                "login": prefix + str(name),
                "home": homes_root.rstrip("/") + "/" + str(name),
                "quota": quota_text,
                "quota_bytes": quota_bytes,
                "gpu": gpu,
                "state": state,
                "uid": uid,
                "comment": comment,
                "email": email,
                "host": host,  # None: the lab's only host (validate_layout, home_hosts)
            }
        )
    if volume_size:
        too_large, overcommitted = volume_problems(users, volume_size)
        errors.extend(too_large)
        warnings.extend(overcommitted)
    return {"users": users, "errors": errors, "warnings": warnings}


def volume_problems(resolved: Sequence[Mapping[str, Any]], volume_size: int) -> tuple:
    """(errors, warnings) of resolved lab users' quotas against a homes volume of ``volume_size`` bytes: a quota
    larger than the volume is an error (naming the user), quotas that add up to more are a warning."""
    errors: List[str] = []
    present = [u for u in resolved if u["state"] == "present"]
    for user in present:
        if user["quota_bytes"] is not None and user["quota_bytes"] > volume_size:
            errors.append(
                "lab_users entry "
                + repr(user["name"])
                + ": quota "
                + str(user["quota"])
                + " is larger than the homes volume ("
                + human_size(volume_size)
                + ")"
            )
    total = sum(u["quota_bytes"] or 0 for u in present)
    warnings = []
    if total > volume_size:
        warnings.append(
            "the quotas of present lab users add up to "
            + human_size(total)
            + ", more than the homes volume ("
            + human_size(volume_size)
            + "): the volume is overcommitted"
        )
    return errors, warnings


def present_users(resolved: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The present entries of a resolved list, in list order."""
    return [u for u in resolved if u["state"] == "present"]


def invalid_message(errors: List[str]) -> str:
    return "invalid lab_users, nothing changed: " + "; ".join(errors)


# ---------------------------------------------------------------------------------------------------------------
# The lab layout (issue 17): every lab user has one home host, where her account, home and runtimes are. The inventory
# says it: lab_users[].host (an inventory host name; optional when the lab has one host), the lab hosts (the play's
# lab_hosts pattern), the group gpu_hosts (the hosts with GPUs, for this check) and the group lab_frontdoor.

GPU_HOSTS_GROUP = "gpu_hosts"
FRONTDOOR_GROUP = "lab_frontdoor"


def _hosts_text(hosts: Sequence[str]) -> str:
    return ", ".join(sorted(hosts)) if hosts else "none"


def validate_layout(
    users: Sequence[Mapping[str, Any]],
    lab_hosts: Sequence[str],
    gpu_hosts: Sequence[str] = (),
    frontdoor_hosts: Sequence[str] = (),
) -> List[str]:
    """Errors of the lab layout, each naming the entry; empty when it is fine. ``users`` are validate_users' users.

    Refused: a ``host`` that is not a lab host; no ``host`` when the lab has more than one lab host; a present
    ``gpu: true`` user homed on a host outside the group gpu_hosts (checked when the lab has more than one host: a
    single host is where everyone is, and its GPU roles find its GPUs themselves); a lab_frontdoor host that is not a
    lab host. A single-host lab without host keys passes: every user is homed on that host.
    """
    errors: List[str] = []
    lab = sorted(set(lab_hosts))
    several = len(lab) > 1
    for user in users:
        where = "lab_users entry " + repr(user["name"])
        host = user.get("host")
        if host is None:
            if several:
                errors.append(
                    where
                    + ": no home host; the lab has "
                    + str(len(lab))
                    + " lab hosts ("
                    + _hosts_text(lab)
                    + "): set host: to the one that keeps her account and home"
                )
            continue
        if host not in lab:
            errors.append(where + ": host " + repr(host) + " is not a lab host (lab hosts: " + _hosts_text(lab) + ")")
        elif several and user.get("gpu") and user.get("state", "present") == "present" and host not in gpu_hosts:
            errors.append(
                where
                + ": gpu: true, but her home host "
                + repr(host)
                + " has no GPUs (not in the group "
                + GPU_HOSTS_GROUP
                + ": "
                + _hosts_text([h for h in gpu_hosts if h in lab])
                + "); home her on a GPU host"
            )
    for host in sorted(set(frontdoor_hosts)):
        if host not in lab:
            errors.append(
                "the group "
                + FRONTDOOR_GROUP
                + " names "
                + repr(host)
                + ", which is not a lab host (lab hosts: "
                + _hosts_text(lab)
                + ")"
            )
    return errors


def home_hosts(users: Sequence[Mapping[str, Any]], lab_hosts: Sequence[str]) -> Dict[str, Optional[str]]:
    """name -> home host: the entry's host, else the lab's only host (None when the lab has several: invalid)."""
    lab = sorted(set(lab_hosts))
    only = lab[0] if len(lab) == 1 else None
    return {str(u["name"]): (u.get("host") or only) for u in users}


def with_home_hosts(users: Sequence[Mapping[str, Any]], lab_hosts: Sequence[str]) -> List[Dict[str, Any]]:
    """validate_users' users with ``host`` filled in (the lab_users_lab fact)."""
    homes = home_hosts(users, lab_hosts)
    return [{**u, "host": homes[str(u["name"])]} for u in users]


def home_conflicts(
    lab_users: Sequence[Mapping[str, Any]], found: Mapping[str, Mapping[str, Sequence[str]]]
) -> Tuple[List[str], List[str]]:
    """(errors, warnings) of the lab users' accounts and homes as found on the play's hosts, before any change.

    ``lab_users``: the lab_users_lab records (``host`` filled in). ``found``: host -> {"accounts": [lab user names
    with a host account], "homes": [names with a home directory]} for each host of the play. An error for a present
    user whose home host holds nothing of her while another host does: changing her home host is a move (labctl
    users move), never a silent new empty home. A warning for each host holding the account or home of a user homed
    elsewhere: metalab never deletes it (data safety); it stays until she is moved or an administrator removes it.
    """
    errors: List[str] = []
    warnings: List[str] = []

    def held(host: str, name: str) -> List[str]:
        parts = found.get(host) or {}
        return [what for what, key in (("account", "accounts"), ("home", "homes")) if name in (parts.get(key) or ())]

    for user in lab_users:
        name, home = str(user["name"]), user.get("host")
        elsewhere = {h: held(h, name) for h in sorted(found) if h != home and held(h, name)}
        if user.get("state", "present") == "present" and home in found and not held(str(home), name) and elsewhere:
            where = ", ".join(h + " (" + " and ".join(parts) + ")" for h, parts in elsewhere.items())
            errors.append(
                "lab_users entry "
                + repr(name)
                + ": her home host is "
                + repr(home)
                + ", which holds nothing of her, but her files are on "
                + where
                + ": changing a user's home host is a move, never a new empty home; run `labctl users move "
                + name
                + " --to "
                + str(home)
                + "`, or set her host back to "
                + next(iter(elsewhere))
            )
            continue
        for host, parts in elsewhere.items():
            warnings.append(
                host
                + " still holds the "
                + " and ".join(parts)
                + " of "
                + repr(name)
                + ", who is homed on "
                + repr(home)
                + ": metalab leaves them there (it never deletes a home); `labctl users move` moves a home, an "
                + "administrator removes a stale copy by hand once it is not needed"
            )
    return errors, warnings
