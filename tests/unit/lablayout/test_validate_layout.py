"""The lab layout (issue 17): every user's home host, checked before anything changes (rules.validate_layout) and
resolved once per play into lab_users_resolved (the users homed on this host) and lab_users_lab (every user)."""

from __future__ import annotations

from typing import Any, Dict, List
from unittest import mock

import pytest
from ansible.playbook.task import Task
from ansible_collections.metalab.lab.plugins.action.resolve_lab_users import ActionModule

from metalab.rules import home_conflicts, home_hosts, validate_layout, validate_users

TWO = ["ly1", "ly2"]


def users(*entries: Dict[str, Any]) -> List[Dict[str, Any]]:
    checked = validate_users(list(entries))
    assert checked["errors"] == []
    return checked["users"]


def test_single_host_lab_without_host_keys_homes_everyone_there() -> None:
    lab = users({"name": "alice"}, {"name": "bob", "gpu": True}, {"name": "carol", "state": "absent"})
    assert validate_layout(lab, ["lab1"]) == []
    assert home_hosts(lab, ["lab1"]) == {"alice": "lab1", "bob": "lab1", "carol": "lab1"}


def test_two_hosts_each_user_homed_on_one() -> None:
    lab = users({"name": "alice", "host": "ly1"}, {"name": "bob", "gpu": True, "host": "ly2"})
    assert validate_layout(lab, TWO, gpu_hosts=["ly2"], frontdoor_hosts=["ly1"]) == []
    assert home_hosts(lab, TWO) == {"alice": "ly1", "bob": "ly2"}


def test_a_host_that_is_not_a_lab_host_is_refused_naming_the_entry() -> None:
    lab = users({"name": "alice", "host": "ly1"}, {"name": "bob", "host": "ly3"})
    assert validate_layout(lab, TWO) == ["lab_users entry 'bob': host 'ly3' is not a lab host (lab hosts: ly1, ly2)"]
    # The same mistake in a single-host lab.
    (error,) = validate_layout(users({"name": "bob", "host": "typo"}), ["lab1"])
    assert error == "lab_users entry 'bob': host 'typo' is not a lab host (lab hosts: lab1)"


def test_no_home_host_with_more_than_one_lab_host_is_refused() -> None:
    lab = users({"name": "alice", "host": "ly1"}, {"name": "bob"}, {"name": "carol", "state": "absent"})
    errors = validate_layout(lab, TWO)
    assert len(errors) == 2
    assert errors[0].startswith("lab_users entry 'bob': no home host; the lab has 2 lab hosts (ly1, ly2): set host:")
    assert errors[1].startswith("lab_users entry 'carol': no home host")


def test_a_gpu_user_homed_on_a_host_without_gpus_is_refused() -> None:
    lab = users({"name": "alice", "host": "ly1", "gpu": True}, {"name": "bob", "host": "ly2", "gpu": True})
    (error,) = validate_layout(lab, TWO, gpu_hosts=["ly2"])
    assert error == (
        "lab_users entry 'alice': gpu: true, but her home host 'ly1' has no GPUs (not in the group gpu_hosts: ly2);"
        " home her on a GPU host"
    )
    # Legitimate: the same users with both hosts in gpu_hosts; an absent gpu user is no longer checked.
    assert validate_layout(lab, TWO, gpu_hosts=TWO) == []
    gone = users({"name": "alice", "host": "ly1", "gpu": True, "state": "absent"})
    assert validate_layout(gone, TWO, gpu_hosts=["ly2"]) == []


def test_single_host_lab_keeps_its_gpu_users_without_a_gpu_hosts_group() -> None:
    assert validate_layout(users({"name": "bob", "gpu": True}), ["lab1"]) == []


def test_a_frontdoor_that_is_not_a_lab_host_is_refused() -> None:
    lab = users({"name": "alice", "host": "ly1"})
    assert validate_layout(lab, TWO, frontdoor_hosts=["ly1"]) == []
    assert validate_layout(lab, TWO, frontdoor_hosts=["backup1"]) == [
        "the group lab_frontdoor names 'backup1', which is not a lab host (lab hosts: ly1, ly2)"
    ]


@pytest.mark.parametrize("host", ["", "  ", 3, ["ly1"]])
def test_host_must_be_a_host_name(host: Any) -> None:
    errors = validate_users([{"name": "alice", "host": host}])["errors"]
    assert errors == [f"lab_users[0] (name 'alice'): host must be the inventory name of a lab host, got {host!r}"]


# --- the facts of roles/common (metalab.lab.resolve_lab_users) ------------------------------------------------


def resolve(inventory_hostname: str, **args: Any) -> Dict[str, Any]:
    task = Task()
    task.args = {"users": [], **args}
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), None, None, None)
    return action.run(task_vars={"inventory_hostname": inventory_hostname})


LAB = [{"name": "alice", "host": "ly1"}, {"name": "bob", "host": "ly2", "gpu": True}, {"name": "carol", "host": "ly1"}]


def test_each_host_resolves_the_users_homed_there() -> None:
    for host, names in (("ly1", ["alice", "carol"]), ("ly2", ["bob"])):
        facts = resolve(host, users=LAB, lab_hosts=TWO, gpu_hosts=["ly2"])["ansible_facts"]
        assert [u["name"] for u in facts["lab_users_resolved"]] == names
        assert [(u["name"], u["host"]) for u in facts["lab_users_lab"]] == [
            ("alice", "ly1"),
            ("bob", "ly2"),
            ("carol", "ly1"),
        ]


def test_single_host_lab_resolves_everyone_on_that_host() -> None:
    result = resolve("lab1", users=[{"name": "alice"}, {"name": "bob", "gpu": True}], lab_hosts=["lab1"])
    facts = result["ansible_facts"]
    assert facts["lab_users_resolved"] == facts["lab_users_lab"]
    assert [(u["name"], u["host"]) for u in facts["lab_users_resolved"]] == [("alice", "lab1"), ("bob", "lab1")]


def test_a_bad_layout_fails_the_play_naming_every_entry() -> None:
    bad = [{"name": "alice"}, {"name": "bob", "host": "ly2", "gpu": True}, {"name": "x!"}]
    result = resolve("ly1", users=bad, lab_hosts=TWO, gpu_hosts=[], frontdoor_hosts=["fd"])
    assert result["failed"] and "ansible_facts" not in result
    assert result["msg"].startswith("invalid lab_users, nothing changed: ")
    for part in ("lab_users[2] (name 'x!')", "entry 'alice': no home host", "entry 'bob': gpu: true", "names 'fd'"):
        assert part in result["msg"]


# --- the hosts against the layout (lab_users' read-only preflight, rules.home_conflicts) -------------------------

HOMED = [
    {"name": "alice", "host": "ly2", "state": "present"},
    {"name": "bob", "host": "ly2", "state": "present"},
]


def test_a_home_host_changed_without_a_move_is_refused_naming_user_and_hosts() -> None:
    found = {"ly1": {"accounts": ["alice"], "homes": ["alice"]}, "ly2": {"accounts": ["bob"], "homes": ["bob"]}}
    errors, warnings = home_conflicts(HOMED, found)
    assert errors == [
        "lab_users entry 'alice': her home host is 'ly2', which holds nothing of her, but her files are on ly1 "
        "(account and home): changing a user's home host is a move, never a new empty home; run "
        "`labctl users move alice --to ly2`, or set her host back to ly1"
    ]
    assert warnings == []


def test_files_on_the_home_host_pass_and_a_stale_copy_elsewhere_is_only_warned_about() -> None:
    # After a move (or a lab of islands made into one): her home host has her, the old host still has a copy.
    found = {"ly1": {"accounts": ["alice"], "homes": ["alice"]}, "ly2": {"accounts": ["alice", "bob"], "homes": []}}
    errors, warnings = home_conflicts(HOMED, found)
    assert errors == []
    (warning,) = warnings
    assert warning.startswith("ly1 still holds the account and home of 'alice', who is homed on 'ly2': metalab ")


def test_a_new_user_and_a_home_host_outside_the_run_pass() -> None:
    assert home_conflicts(HOMED, {"ly1": {"accounts": [], "homes": []}, "ly2": {"accounts": [], "homes": []}}) == (
        [],
        [],
    )
    # --limit ly1: her home host is not in the play, nothing can be said about it; the copy on ly1 is warned about.
    errors, warnings = home_conflicts(HOMED, {"ly1": {"accounts": ["alice"], "homes": []}})
    assert errors == [] and len(warnings) == 1


def test_an_absent_user_is_no_move() -> None:
    gone = [{"name": "alice", "host": "ly2", "state": "absent"}]
    errors, warnings = home_conflicts(gone, {"ly1": {"accounts": [], "homes": ["alice"]}, "ly2": {}})
    assert errors == [] and len(warnings) == 1
