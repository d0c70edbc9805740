# Copyright: metalab contributors
# Apache-2.0
"""Lab users on a host: uid allocation and reconciliation planning (pure functions, stdlib only).

The list itself is validated and resolved once, on the controller (rules.validate_users); these functions plan
the host side for the resolved records.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from ansible_collections.metalab.lab.plugins.module_utils.rules import USER_STATES

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


# One resolved lab user (metalab.lab.resolve_lab_users, rules.validate_users), as the lab_users module takes it.
RESOLVED_USER_SPEC: Dict[str, Dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "login": {"type": "str", "required": True},
    "home": {"type": "path", "required": True},
    "quota": {"type": "raw"},
    "quota_bytes": {"type": "int"},
    "gpu": {"type": "bool", "default": False},
    "state": {"type": "str", "choices": list(USER_STATES), "default": "present"},
    "uid": {"type": "int"},
    "comment": {"type": "str", "default": ""},
    "email": {"type": "str"},  # recorded for labctl (sign-up mail); the account does not use it
    "host": {"type": "str"},  # her home host (the lab layout); the module runs there only
}


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
        home = user.get("home") or root + "/" + user["name"]
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
