# Copyright: metalab contributors
# Apache-2.0
"""Lab user validation, uid allocation and reconciliation planning (pure functions, stdlib only).

Importable without Ansible: ``labctl users add`` validates with the same code as the preflight task.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from ansible_collections.metalab.lab.plugins.module_utils.quota import SizeError, human_size, parse_size

# Matched in full (fullmatch): "$" alone would accept a trailing newline.
NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
PREFIX_RE = re.compile(r"[a-z_][a-z0-9_-]*")
ALLOWED_KEYS = ("name", "quota", "gpu", "state", "uid", "comment")
STATES = ("present", "absent")
# Refused even though the prefix keeps host accounts apart: these names confuse people and logs.
RESERVED_NAMES = frozenset(
    {
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
    }
)
MAX_LOGIN_LEN = 32  # useradd refuses longer names on the supported platforms
DEFAULT_UID_BASE = 20000
DEFAULT_UID_COUNT = 10000
# Groups that grant privileges on a host; a lab account is never left in one of them.
PRIVILEGED_GROUPS = (
    "root",
    "sudo",
    "wheel",
    "admin",
    "adm",
    "docker",
    "podman",
    "lxd",
    "libvirt",
    "kvm",
    "disk",
    "shadow",
    "systemd-journal",
    "video",
    "render",
)


def _label(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if name is None:
        return "lab_users[" + str(index) + "]"
    return "lab_users[" + str(index) + "] (name " + repr(name) + ")"


def validate_users(
    entries: Any,
    *,
    default_quota: Any = "15G",
    prefix: str = "lab-",
    volume_size: Optional[int] = None,
    uid_base: int = DEFAULT_UID_BASE,
    uid_count: int = DEFAULT_UID_COUNT,
    require_quota: bool = False,
) -> Dict[str, Any]:
    """Check the lab_users list; return {"users": [normalised], "errors": [...], "warnings": [...]}.

    Normalised entry: name, login (prefix + name), quota (the text), quota_bytes, gpu, state, uid (or None),
    comment.  Nothing is changed anywhere; the caller fails when errors is not empty.
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
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix or "x"):
        errors.append("lab_users_prefix " + repr(prefix) + " is not POSIX-safe (lowercase letters, digits, _ and -)")
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
        unknown = sorted(str(k) for k in entry if k not in ALLOWED_KEYS)
        if unknown:
            problems.append("unknown key(s) " + ", ".join(unknown) + " (allowed: " + ", ".join(ALLOWED_KEYS) + ")")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            problems.append(
                "invalid name " + repr(name) + ": use 1-31 characters, lowercase letters, digits, _ and -, "
                "starting with a letter or _"
            )
        elif name in RESERVED_NAMES:
            problems.append("name " + repr(name) + " is reserved")
        elif len(prefix + name) > MAX_LOGIN_LEN:
            problems.append(
                "host account " + repr(prefix + name) + " is longer than " + str(MAX_LOGIN_LEN) + " characters"
            )
        elif name in seen_names:
            problems.append("duplicate name, already used by lab_users[" + str(seen_names[name]) + "]")
        state = entry.get("state", "present")
        if state not in STATES:
            problems.append("state must be present or absent, got " + repr(state))
        gpu = entry.get("gpu", False)
        if not isinstance(gpu, bool):
            problems.append("gpu must be true or false, got " + repr(gpu))
        uid = entry.get("uid")
        if uid is not None:
            if isinstance(uid, bool) or not isinstance(uid, int) or not 1000 <= uid <= 4294967294 or uid == 65534:
                problems.append("uid must be an integer from 1000 (not 65534), got " + repr(uid))
            elif uid in seen_uids:
                problems.append(
                    "duplicate uid " + str(uid) + ", already used by lab_users[" + str(seen_uids[uid]) + "]"
                )
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
        if quota_bytes is not None and volume_size and quota_bytes > volume_size and state == "present":
            problems.append(
                "quota " + str(quota_text) + " is larger than the homes volume (" + human_size(volume_size) + ")"
            )
        comment = entry.get("comment", "")
        if comment is None:
            comment = ""
        if not isinstance(comment, str) or ":" in comment or "\n" in comment:
            problems.append("comment must be text without ':' or newlines")
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
                "quota": quota_text,
                "quota_bytes": quota_bytes,
                "gpu": gpu,
                "state": state,
                "uid": uid,
                "comment": comment,
            }
        )
    if volume_size:
        total = sum(u["quota_bytes"] or 0 for u in users if u["state"] == "present")
        if total > volume_size:
            warnings.append(
                "the quotas of present lab users add up to "
                + human_size(total)
                + ", more than the homes volume ("
                + human_size(volume_size)
                + "): the volume is overcommitted"
            )
    return {"users": users, "errors": errors, "warnings": warnings}


# The lab_users module's options that validation reads (validate_params), with their types and defaults: the
# module's argument_spec includes them, its action plugin validates them on the controller.
VALIDATION_SPEC: Dict[str, Dict[str, Any]] = {
    "users": {"type": "list", "elements": "raw", "required": True},
    "prefix": {"type": "str", "default": "lab-"},
    "default_quota": {"type": "str", "default": "15G"},
    "volume_size": {"type": "int", "default": 0},
    "uid_base": {"type": "int", "default": DEFAULT_UID_BASE},
    "uid_count": {"type": "int", "default": DEFAULT_UID_COUNT},
    "validate_only": {"type": "bool", "default": False},
}


def validate_params(p: Mapping[str, Any]) -> Dict[str, Any]:
    """validate_users with the lab_users module's parameters (the module and its action plugin share it)."""
    return validate_users(
        p["users"],
        default_quota=p["default_quota"],
        prefix=p["prefix"],
        volume_size=p["volume_size"] or None,
        uid_base=p["uid_base"],
        uid_count=p["uid_count"],
    )


def invalid_message(errors: List[str]) -> str:
    return "invalid lab_users, nothing changed: " + "; ".join(errors)


def validated_result(checked: Dict[str, Any]) -> Dict[str, Any]:
    """The result of a run that only validated (validate_only) or found nothing to do yet."""
    return {"changed": False, "users": checked["users"], "archives": [], "warnings_list": checked["warnings"]}


def parse_passwd(text: str) -> Dict[str, Dict[str, Any]]:
    """``getent passwd`` -> login -> {uid, gid, comment, home, shell}."""
    accounts: Dict[str, Dict[str, Any]] = {}
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) < 7:
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        accounts[fields[0]] = {"uid": uid, "gid": gid, "comment": fields[4], "home": fields[5], "shell": fields[6]}
    return accounts


def parse_group(text: str) -> Dict[str, Dict[str, Any]]:
    """``getent group`` -> name -> {gid, members}."""
    groups: Dict[str, Dict[str, Any]] = {}
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) < 4:
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        groups[fields[0]] = {"gid": gid, "members": [m for m in fields[3].split(",") if m]}
    return groups


def allocate_uids(
    users: List[Dict[str, Any]],
    accounts: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]],
    registry: Mapping[str, int],
    base: int = DEFAULT_UID_BASE,
    count: int = DEFAULT_UID_COUNT,
) -> Dict[str, Any]:
    """Give every user a uid: the entry's uid, else the one recorded in the registry, else the existing
    account's, else the lowest id >= base used by no account, group or registry record (new users in name
    order, so two hosts with the same history allocate the same ids).  A uid once recorded for a name is
    never handed to another name.  Returns {"uids": login -> uid, "registry": new registry, "errors": [...]}.
    """
    errors: List[str] = []
    uids: Dict[str, int] = {}
    new_registry = dict(registry)
    taken: Set[int] = {a["uid"] for a in accounts.values()} | {g["gid"] for g in groups.values()}
    taken |= set(registry.values())
    taken |= {u["uid"] for u in users if u.get("uid") is not None}
    pending: List[Dict[str, Any]] = []
    for user in users:
        login = user["login"]
        if user.get("uid") is not None:
            uids[login] = user["uid"]
        elif login in registry:
            uids[login] = registry[login]
        elif login in accounts:
            uids[login] = accounts[login]["uid"]
        elif user["state"] == "present":
            pending.append(user)
    candidate = base
    for user in sorted(pending, key=lambda u: u["login"]):
        while candidate in taken and candidate < base + count:
            candidate += 1
        if candidate >= base + count:
            errors.append(
                "no free uid left in "
                + str(base)
                + "-"
                + str(base + count - 1)
                + " for "
                + user["login"]
                + " (raise lab_users_uid_count or give the entry a uid)"
            )
            continue
        uids[user["login"]] = candidate
        taken.add(candidate)
    for user in users:
        login = user["login"]
        if login not in uids:
            continue
        uid = uids[login]
        owner = next((n for n, r in registry.items() if r == uid and n != login), None)
        if owner is not None:
            errors.append(login + ": uid " + str(uid) + " was recorded for " + owner + "; a uid is never reused")
        owner = next((n for n, a in accounts.items() if a["uid"] == uid and n != login), None)
        if owner is not None:
            errors.append(login + ": uid " + str(uid) + " already belongs to host account " + owner)
        owner = next((n for n, g in groups.items() if g["gid"] == uid and n != login), None)
        if owner is not None and user["state"] == "present":
            errors.append(login + ": gid " + str(uid) + " already belongs to host group " + owner)
        if user["state"] == "present":
            new_registry[login] = uid
    return {"uids": uids, "registry": new_registry, "errors": errors}


def plan_users(
    users: List[Dict[str, Any]],
    uids: Mapping[str, int],
    accounts: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]],
    quotas: Optional[Mapping[int, Mapping[str, int]]],
    homes_root: str,
    homes: Optional[Mapping[str, Mapping[str, Any]]] = None,
    shell: str = "/bin/bash",
    privileged_groups: Iterable[str] = PRIVILEGED_GROUPS,
    member_group: Optional[str] = None,
) -> Dict[str, Any]:
    """Compare desired users with the host and return {"actions": [...], "errors": [...]}.

    ``quotas`` is uid -> {hard_kib, soft_kib} or None when quotas are not available (the quota is a hard
    limit, soft limits are kept at 0); ``homes`` is
    login -> {exists, uid, gid, mode} for the expected home directories.  One action per user:
    {name, login, uid, action: add|change|remove|none, steps: [...], quota_kib: {before, after}}.
    ``member_group`` is the unprivileged group every lab account belongs to (hardening keys off it).
    Steps are symbolic (groupadd, useradd, usermod_shell, usermod_comment, drop_group:<g>, add_group:<g>, home_fix,
    quota, archive, quota_clear, userdel, groupdel, home_remove); the module turns them into commands.
    """
    homes = homes or {}
    privileged = set(privileged_groups)
    actions: List[Dict[str, Any]] = []
    errors: List[str] = []
    root = homes_root.rstrip("/")
    for user in users:
        login = user["login"]
        home = root + "/" + user["name"]
        account = accounts.get(login)
        uid = uids.get(login, account["uid"] if account else None)
        home_state = homes.get(login) or {}
        action: Dict[str, Any] = {"name": user["name"], "login": login, "uid": uid, "home": home, "steps": []}
        steps: List[str] = action["steps"]
        current_quota = (quotas or {}).get(uid) if uid is not None else None
        before_kib = current_quota["hard_kib"] if current_quota else 0
        if user["state"] == "absent":
            if account is None and not home_state.get("exists"):
                action["action"] = "none"
            else:
                action["action"] = "remove"
                if home_state.get("exists"):
                    steps.append("archive")
                if quotas is not None and current_quota and (current_quota["hard_kib"] or current_quota["soft_kib"]):
                    steps.append("quota_clear")
                if account is not None:
                    steps.append("userdel")
                if login in groups:
                    steps.append("groupdel")
                if home_state.get("exists"):
                    steps.append("home_remove")
            action["quota_kib"] = {"before": before_kib, "after": 0}
            actions.append(action)
            continue
        want_kib = (user["quota_bytes"] + 1023) // 1024 if user.get("quota_bytes") else 0
        if account is None:
            action["action"] = "add"
            if login in groups:
                if groups[login]["gid"] != uid:
                    errors.append(
                        login
                        + ": group "
                        + login
                        + " exists with gid "
                        + str(groups[login]["gid"])
                        + ", expected "
                        + str(uid)
                        + "; fix or remove the group"
                    )
            else:
                steps.append("groupadd")
            steps.append("useradd")
            steps.append("home_fix")
        else:
            action["action"] = "change"
            if account["uid"] != uid:
                errors.append(
                    login
                    + ": host account has uid "
                    + str(account["uid"])
                    + " but "
                    + str(uid)
                    + " is wanted; metalab never renumbers an account (its files would change owner)"
                )
            if account["home"].rstrip("/") != home:
                errors.append(
                    login
                    + ": host account's home is "
                    + account["home"]
                    + ", expected "
                    + home
                    + "; metalab never moves a home, fix it by hand"
                )
            if account["shell"] != shell:
                steps.append("usermod_shell")
            if (user.get("comment") or "") != (account.get("comment") or ""):
                steps.append("usermod_comment")
            for group_name in sorted(groups):
                if group_name in privileged and login in groups[group_name]["members"]:
                    steps.append("drop_group:" + group_name)
            if member_group and login not in groups.get(member_group, {}).get("members", []):
                steps.append("add_group:" + member_group)
            if (
                not home_state.get("exists")
                or home_state.get("uid") != uid
                or home_state.get("gid") != uid
                or home_state.get("mode") != 0o700
            ):
                steps.append("home_fix")
        if quotas is not None and (
            current_quota is None or current_quota["hard_kib"] != want_kib or current_quota["soft_kib"] != 0
        ):
            steps.append("quota")
        action["quota_kib"] = {"before": before_kib, "after": want_kib}
        if action["action"] == "change" and not steps:
            action["action"] = "none"
        actions.append(action)
    return {"actions": actions, "errors": errors}
