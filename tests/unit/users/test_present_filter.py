"""metalab.lab.present_lab_users: who the front door, the guard and the portal serve."""

from __future__ import annotations

from ansible_collections.metalab.lab.plugins.filter.lab_users import FilterModule, present_lab_users


def test_state_defaults_to_present_and_absent_users_are_left_out():
    users = [
        {"name": "alice"},
        {"name": "bob", "state": "absent"},
        {"name": "carol", "state": "present", "quota": "1G"},
        {"name": "dave"},
    ]
    assert present_lab_users(users) == ["alice", "dave", "carol"]


def test_order_is_the_one_the_roles_rendered_before():
    # Implicit entries first, then explicit ones, each in list order: nginx's locations and guard.json keep their
    # bytes on hosts converged before the filter.
    users = [{"name": "zed", "state": "present"}, {"name": "amy"}, {"name": "bea", "state": "present"}]
    assert present_lab_users(users) == ["amy", "zed", "bea"]


def test_empty_and_unnamed_entries():
    assert present_lab_users([]) == []
    assert present_lab_users(None) == []
    assert present_lab_users([{"quota": "1G"}, "alice", {"name": "bob"}]) == ["bob"]


def test_registered_under_its_name():
    assert FilterModule().filters()["present_lab_users"] is present_lab_users
