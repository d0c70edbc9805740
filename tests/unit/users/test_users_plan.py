"""labusers: uid allocation and the add/change/remove plan."""

from __future__ import annotations

from ansible_collections.metalab.lab.plugins.module_utils.labusers import (
    allocate_uids,
    parse_group,
    parse_passwd,
    plan_users,
)

from metalab.rules import validate_users

PASSWD = """root:x:0:0:root:/root:/bin/bash
admin:x:1000:1000:Admin:/home/admin:/bin/bash
lab-alice:x:20000:20000::/srv/metalab/homes/alice:/bin/bash
"""
GROUP = """root:x:0:
sudo:x:27:admin
admin:x:1000:
lab-alice:x:20000:
other:x:20001:
"""
ROOT = "/srv/metalab/homes"
OK_HOME = {"exists": True, "uid": 20000, "gid": 20000, "mode": 0o700}


def users(*entries):
    result = validate_users(list(entries))
    assert result["errors"] == []
    return result["users"]


def test_parsers():
    accounts = parse_passwd(PASSWD)
    assert accounts["lab-alice"] == {
        "uid": 20000,
        "gid": 20000,
        "comment": "",
        "home": ROOT + "/alice",
        "shell": "/bin/bash",
    }
    assert parse_group(GROUP)["sudo"] == {"gid": 27, "members": ["admin"]}


def test_allocation_keeps_existing_skips_taken_ids_and_is_name_ordered():
    wanted = users({"name": "zoe"}, {"name": "alice"}, {"name": "bob"}, {"name": "carol", "uid": 20002})
    alloc = allocate_uids(wanted, parse_passwd(PASSWD), parse_group(GROUP), {}, 20000)
    assert alloc["errors"] == []
    # alice keeps 20000; 20001 is a group, 20002 is carol's: bob then zoe (name order, not list order)
    assert alloc["uids"] == {"lab-alice": 20000, "lab-bob": 20003, "lab-zoe": 20004, "lab-carol": 20002}
    assert alloc["registry"]["lab-bob"] == 20003


def test_allocation_never_reuses_a_recorded_uid():
    registry = {"lab-gone": 20000}
    alloc = allocate_uids(users({"name": "new"}), {}, {}, registry, 20000)
    assert alloc["uids"]["lab-new"] == 20001
    assert alloc["registry"] == {"lab-gone": 20000, "lab-new": 20001}
    clash = allocate_uids(users({"name": "new", "uid": 20000}), {}, {}, registry, 20000)
    assert "uid 20000 was recorded for lab-gone" in clash["errors"][0]


def test_allocation_range_exhausted():
    alloc = allocate_uids(users({"name": "a"}, {"name": "b"}), {}, {}, {}, 20000, 1)
    assert "no free uid left in 20000-20000 for lab-b" in alloc["errors"][0]


def plan(wanted, quotas, homes=None, passwd=PASSWD, group=GROUP):
    accounts, groups = parse_passwd(passwd), parse_group(group)
    alloc = allocate_uids(wanted, accounts, groups, {}, 20000)
    return plan_users(wanted, alloc["uids"], accounts, groups, quotas, ROOT, homes or {})


def test_add_new_user_with_quota():
    result = plan(users({"name": "bob", "quota": "1G"}), {})
    (action,) = result["actions"]
    assert action["action"] == "add"
    assert action["steps"] == ["groupadd", "useradd", "home_fix", "quota"]
    assert action["quota_kib"] == {"before": 0, "after": 1048576}
    assert action["home"] == ROOT + "/bob"


def test_converged_user_is_none():
    quotas = {20000: {"used_kib": 4, "soft_kib": 0, "hard_kib": 15728640}}
    result = plan(users({"name": "alice"}), quotas, {"lab-alice": OK_HOME})
    assert result["actions"][0]["action"] == "none"
    assert result["errors"] == []


def test_quota_change_and_home_mode_fix_and_sudo_drop():
    quotas = {20000: {"used_kib": 4, "soft_kib": 0, "hard_kib": 15728640}}
    group = GROUP.replace("sudo:x:27:admin", "sudo:x:27:admin,lab-alice")
    result = plan(
        users({"name": "alice", "quota": "20G"}), quotas, {"lab-alice": dict(OK_HOME, mode=0o755)}, group=group
    )
    (action,) = result["actions"]
    assert action["action"] == "change"
    assert action["steps"] == ["drop_group:sudo", "home_fix", "quota"]
    assert action["quota_kib"] == {"before": 15728640, "after": 20971520}


def test_no_quota_backend_plans_no_quota_steps():
    result = plan(users({"name": "alice"}), None, {"lab-alice": OK_HOME})
    assert result["actions"][0]["action"] == "none"


def test_remove_archives_first():
    quotas = {20000: {"used_kib": 4, "soft_kib": 0, "hard_kib": 15728640}}
    result = plan(users({"name": "alice", "state": "absent"}), quotas, {"lab-alice": OK_HOME})
    (action,) = result["actions"]
    assert action["action"] == "remove"
    assert action["steps"] == ["archive", "quota_clear", "userdel", "groupdel", "home_remove"]


def test_absent_and_gone_is_none():
    result = plan(users({"name": "bob", "state": "absent"}), {})
    assert result["actions"][0]["action"] == "none"


def test_refuses_to_renumber_or_move():
    passwd = PASSWD.replace("lab-alice:x:20000:20000::/srv/metalab/homes/alice", "lab-alice:x:20000:20000::/home/x")
    result = plan(users({"name": "alice", "uid": 20500}), {}, {}, passwd=passwd)
    assert any("never renumbers" in e for e in result["errors"])
    assert any("never moves a home" in e for e in result["errors"])


def test_existing_account_joins_the_lab_users_group_once():
    wanted = users({"name": "alice", "quota": "1G"})
    accounts, groups = parse_passwd(PASSWD), parse_group(GROUP + "labusers:x:999:\n")
    alloc = allocate_uids(wanted, accounts, groups, {}, 20000, 100)
    quotas = {20000: {"hard_kib": 1024 * 1024, "soft_kib": 0}}
    homes = {"lab-alice": OK_HOME}
    first = plan_users(wanted, alloc["uids"], accounts, groups, quotas, ROOT, homes, member_group="labusers")
    assert first["actions"][0]["steps"] == ["add_group:labusers"]
    groups = parse_group(GROUP + "labusers:x:999:lab-alice\n")
    again = plan_users(wanted, alloc["uids"], accounts, groups, quotas, ROOT, homes, member_group="labusers")
    assert again["actions"][0]["steps"] == []
    assert again["actions"][0]["action"] == "none"
