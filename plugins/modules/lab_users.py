#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab_users
short_description: Reconcile all lab users (host accounts, homes, disk quotas) in one call
description:
  - Takes the lab users as resolved on the controller (the fact C(lab_users_resolved) that
    M(metalab.lab.resolve_lab_users) sets after validating the whole list), and does not validate or derive them
    again.
  - Reads the host once (C(getent passwd), C(getent group), the quota report), plans additions, changes and
    removals, and acts only outside check mode.
  - Each present user gets the host account C(login) with a stable uid (the entry's C(uid), else the one
    recorded in O(registry), else the lowest free id from O(uid_base)), a primary group with the same id,
    O(shell), no privileged supplementary group, the home C(home) with mode 0700, and a hard disk
    quota (XFS via C(xfs_quota), ext4 via C(setquota)).
  - An absent user's home is archived first (C(tar.gz) by GNU tar with C(--sparse), so sparse files stay small,
    plus C(.sha256) under O(archive_dir), verified by reading it back), then the quota, account, group and home
    are removed. Archives are never deleted.
version_added: 0.1.0
author: metalab contributors
options:
  users:
    description: The resolved lab users (C(lab_users_resolved)).
    type: list
    elements: dict
    required: true
    suboptions:
      name: {description: Lab user name., type: str, required: true}
      login: {description: Host account., type: str, required: true}
      home: {description: Home directory (under O(homes_root))., type: path, required: true}
      quota: {description: Quota as written in the inventory., type: raw}
      quota_bytes: {description: Hard quota in bytes (null = none)., type: int}
      gpu: {description: Whether the user may start GPU runtimes., type: bool, default: false}
      state: {description: present or absent., type: str, choices: [present, absent], default: present}
      uid: {description: Fixed uid (null = allocated)., type: int}
      comment: {description: GECOS comment., type: str, default: ""}
      email: {description: Her e-mail address (for labctl's mail; not used for the account)., type: str}
  homes_root:
    description: Directory holding the homes; nothing outside it is ever removed.
    type: path
    default: /srv/metalab/homes
  quota_backend:
    description: How quotas are set; C(none) when they are unavailable (reported per user).
    type: str
    choices: [xfs, ext4, none]
    default: none
  quota_mount:
    description: Mount point the quotas apply to; defaults to O(homes_root).
    type: path
  uid_base:
    description: First uid (and gid) allocated to lab users.
    type: int
    default: 20000
  uid_count:
    description: Number of ids in the allocation range.
    type: int
    default: 10000
  registry:
    description: JSON file recording the uid given to each account, so reruns and re-adds are stable.
    type: path
    default: /var/lib/metalab/lab_users.json
  archive_dir:
    description: Where homes of removed users are archived.
    type: path
    default: /srv/metalab/archive
  shell:
    description:
      - Login shell of lab accounts; existing accounts are changed to it. Lab accounts own files and run
        containers, they never log in, so the default refuses a login.
    type: path
    default: /usr/sbin/nologin
  member_group:
    description:
      - Unprivileged group every lab account belongs to (the base role's hardening keys off it); must exist.
    type: str
  privileged_groups:
    description: Groups a lab account is removed from when found in them.
    type: list
    elements: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Lab users
  metalab.lab.lab_users:
    users: "{{ lab_users_resolved }}"
    homes_root: /srv/metalab/homes
    quota_backend: xfs
"""

RETURN = r"""
users:
  description: One result per entry - name, login, uid, gid, home, state, gpu, quota_bytes, action
    (add, change, remove, none), steps, quota (set, unchanged, unavailable) and archive (removals).
  returned: always
  type: list
  elements: dict
archives:
  description: Archives written for removed users, each with path and sha256.
  returned: always
  type: list
  elements: dict
"""

import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.labusers import (  # noqa: E402
    PRIVILEGED_GROUPS,
    RESOLVED_USER_SPEC,
    allocate_uids,
    parse_group,
    parse_passwd,
    plan_users,
)
from ansible_collections.metalab.lab.plugins.module_utils.quota import (  # noqa: E402
    parse_repquota,
    parse_xfs_quota_report,
)


def utc_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def home_state(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    return {
        "exists": True,
        "symlink": stat.S_ISLNK(info.st_mode),
        "dir": stat.S_ISDIR(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "mode": stat.S_IMODE(info.st_mode),
    }


class LabUsers:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.mount = self.p["quota_mount"] or self.p["homes_root"]

    def run(self, argv, check_rc=True):
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        if rc != 0 and check_rc:
            self.module.fail_json(msg=" ".join(argv) + " failed (rc " + str(rc) + "): " + (err or out).strip())
        return rc, out, err

    def read_registry(self):
        path = self.p["registry"]
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            self.module.fail_json(msg="cannot read the uid registry " + path + ": " + str(exc))
        return {str(k): int(v) for k, v in (data.get("uids") or {}).items()}

    def write_registry(self, uids):
        path = self.p["registry"]
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"uids": dict(sorted(uids.items()))}, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        self.module.atomic_move(tmp, path)

    def read_quotas(self):
        backend = self.p["quota_backend"]
        if backend == "none":
            return None
        if backend == "xfs":
            argv = ["xfs_quota", "-x", "-c", "report -u -b -n -N", self.mount]
            parse = parse_xfs_quota_report
        else:
            argv = ["repquota", "-u", "-n", self.mount]
            parse = parse_repquota
        rc, out, err = self.run(argv, check_rc=not self.module.check_mode)
        if rc != 0:  # check mode on a host whose volume is not mounted yet
            self.module.warn("cannot read quotas yet (" + (err or out).strip() + "); assuming none are set")
            return {}
        return parse(out)

    def set_quota(self, uid, kib):
        if self.p["quota_backend"] == "xfs":
            limit = "limit -u bsoft=0 bhard=" + str(kib) + "k " + str(uid)
            self.run(["xfs_quota", "-x", "-c", limit, self.mount])
        else:
            self.run(["setquota", "-u", str(uid), "0", str(kib), "0", "0", self.mount])

    def archive(self, login, home):
        archive_dir = self.p["archive_dir"]
        os.makedirs(archive_dir, mode=0o700, exist_ok=True)
        path = os.path.join(archive_dir, login + "-" + utc_stamp() + ".tar.gz")
        tmp = path + ".partial"
        parent, name = os.path.split(home.rstrip("/"))
        # GNU tar, not Python's tarfile: --sparse keeps a sparse file's holes out of the archive (tarfile reads and
        # compresses every zero of the apparent size); numeric owners because the account is removed next.
        tar = self.module.get_bin_path("tar", required=True)
        self.run([tar, "--create", "--gzip", "--sparse", "--numeric-owner", "--file", tmp, "--directory", parent, name])
        self.run([tar, "--list", "--gzip", "--file", tmp])  # read it back before anything is deleted
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        digest = sha256_of(path)
        with open(path + ".sha256", "w", encoding="utf-8") as handle:
            handle.write(digest + "  " + os.path.basename(path) + "\n")
        return {"path": path, "sha256": digest, "sha256_file": path + ".sha256"}

    def remove_home(self, home):
        root = os.path.realpath(self.p["homes_root"])
        if os.path.dirname(os.path.realpath(home)) != root or os.path.islink(home):
            self.module.fail_json(msg="refusing to remove " + home + ": not a directory directly under " + root)
        shutil.rmtree(home)

    def fix_home(self, home, uid):
        if not os.path.isdir(home):
            os.mkdir(home, 0o700)
        os.chown(home, uid, uid)  # the home directory itself only: never a recursive chown
        os.chmod(home, 0o700)

    def execute(self, user, action):
        login, uid, home = action["login"], action["uid"], action["home"]
        out = {}
        for step in action["steps"]:
            if step == "groupadd":
                self.run(["groupadd", "--gid", str(uid), login])
            elif step == "useradd":
                argv = [
                    "useradd",
                    "--uid",
                    str(uid),
                    "--gid",
                    str(uid),
                    "--no-user-group",
                    "--home-dir",
                    home,
                    "--create-home",
                    "--shell",
                    self.p["shell"],
                ]
                if user.get("comment"):
                    argv += ["--comment", user["comment"]]
                if self.p["member_group"]:
                    argv += ["--groups", self.p["member_group"]]
                self.run(argv + [login])
            elif step == "usermod_shell":
                self.run(["usermod", "--shell", self.p["shell"], login])
            elif step == "usermod_comment":
                self.run(["usermod", "--comment", user.get("comment") or "", login])
            elif step.startswith("add_group:"):
                self.run(["usermod", "--append", "--groups", step.split(":", 1)[1], login])
            elif step.startswith("drop_group:"):
                self.run(["gpasswd", "--delete", login, step.split(":", 1)[1]])
            elif step == "home_fix":
                self.fix_home(home, uid)
            elif step == "quota":
                self.set_quota(uid, action["quota_kib"]["after"])
            elif step == "archive":
                out["archive"] = self.archive(login, home)
            elif step == "quota_clear":
                self.set_quota(uid, 0)
            elif step == "userdel":
                self.run(["userdel", login])
            elif step == "groupdel":
                rc, _out, _err = self.run(["getent", "group", login], check_rc=False)
                if rc == 0:  # userdel already removes the user group where USERGROUPS_ENAB is set
                    self.run(["groupdel", login])
            elif step == "home_remove":
                self.remove_home(home)
        return out

    def apply(self):
        p = self.p
        users = p["users"]
        base = {"changed": False, "users": users, "archives": []}

        accounts = parse_passwd(self.run(["getent", "passwd"])[1])
        groups = parse_group(self.run(["getent", "group"])[1])
        quotas = self.read_quotas()
        registry = self.read_registry()
        alloc = allocate_uids(users, accounts, groups, registry, p["uid_base"], p["uid_count"])
        if alloc["errors"]:
            self.module.fail_json(msg="cannot allocate uids, nothing changed: " + "; ".join(alloc["errors"]))
        root = p["homes_root"].rstrip("/")
        homes = {}
        for user in users:
            state = home_state(root + "/" + user["name"])
            if state.get("exists") and (state["symlink"] or not state["dir"]):
                self.module.fail_json(
                    msg=root + "/" + user["name"] + " is not a directory (symlink or file); "
                    "fix it by hand, nothing changed"
                )
            homes[user["login"]] = state
        plan = plan_users(
            users,
            alloc["uids"],
            accounts,
            groups,
            quotas,
            root,
            homes,
            p["shell"],
            p["privileged_groups"] or PRIVILEGED_GROUPS,
            member_group=p["member_group"],
        )
        if plan["errors"]:
            self.module.fail_json(msg="cannot reconcile lab users, nothing changed: " + "; ".join(plan["errors"]))

        changed = any(a["action"] != "none" for a in plan["actions"])
        registry_changed = alloc["registry"] != registry
        results, archives, before, after = [], [], [], []
        by_login = {u["login"]: u for u in users}
        for action in plan["actions"]:
            user = by_login[action["login"]]
            entry = dict(
                user,
                uid=action["uid"],
                gid=action["uid"],
                home=action["home"],
                action=action["action"],
                steps=list(action["steps"]),
            )
            if quotas is None:
                entry["quota_status"] = "unavailable"
            elif "quota" in action["steps"]:
                entry["quota_status"] = "set"
            else:
                entry["quota_status"] = "unchanged"
            if action["action"] != "none":
                before.append(self.describe(action, accounts.get(action["login"]), action["quota_kib"]["before"]))
                after.append(
                    self.describe(action, None if user["state"] == "absent" else user, action["quota_kib"]["after"])
                )
            if not self.module.check_mode and action["action"] != "none":
                done = self.execute(user, action)
                if "archive" in done:
                    entry["archive"] = done["archive"]
                    archives.append(done["archive"])
            results.append(entry)
        if registry_changed and not self.module.check_mode:
            self.write_registry(alloc["registry"])
        result = dict(base, changed=changed or registry_changed, users=results, archives=archives)
        if self.module._diff and changed:
            result["diff"] = {
                "before": "\n".join(before) + "\n",
                "after": "\n".join(after) + "\n",
                "before_header": "lab users",
                "after_header": "lab users",
            }
        self.module.exit_json(**result)

    def describe(self, action, present, kib):
        if present is None:
            return action["login"] + ": absent"
        quota = str(kib) + "KiB" if self.p["quota_backend"] != "none" else "unavailable"
        return "{}: uid={} home={} shell={} quota={}".format(
            action["login"], action["uid"], action["home"], self.p["shell"], quota
        )


def main():
    module = AnsibleModule(
        argument_spec={
            "users": {"type": "list", "elements": "dict", "required": True, "options": RESOLVED_USER_SPEC},
            "uid_base": {"type": "int", "default": 20000},
            "uid_count": {"type": "int", "default": 10000},
            "homes_root": {"type": "path", "default": "/srv/metalab/homes"},
            "quota_backend": {"type": "str", "choices": ["xfs", "ext4", "none"], "default": "none"},
            "quota_mount": {"type": "path"},
            "registry": {"type": "path", "default": "/var/lib/metalab/lab_users.json"},
            "archive_dir": {"type": "path", "default": "/srv/metalab/archive"},
            "shell": {"type": "path", "default": "/usr/sbin/nologin"},
            "privileged_groups": {"type": "list", "elements": "str"},
            "member_group": {"type": "str"},
        },
        supports_check_mode=True,
    )
    LabUsers(module).apply()


if __name__ == "__main__":
    main()
