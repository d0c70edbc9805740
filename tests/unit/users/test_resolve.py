"""The lab_users list resolved once, on the controller: the resolve_lab_users action and the volume filter."""

from __future__ import annotations

from typing import Any, Dict
from unittest import mock

import pytest
from ansible.playbook.task import Task
from ansible_collections.metalab.lab.plugins.action.resolve_lab_users import ActionModule
from ansible_collections.metalab.lab.plugins.filter.lab_users import FilterModule, lab_users_over_volume

GiB = 1024**3


def resolve(**args: Any) -> Dict[str, Any]:
    task = Task()
    task.args = args
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), None, None, None)
    return action.run(task_vars={})


def test_the_fact_every_role_reads() -> None:
    result = resolve(
        users=[{"name": "alice", "quota": "1G"}, {"name": "bob", "gpu": True}, {"name": "carol", "state": "absent"}],
        prefix="lab-",
        default_quota="15G",
        homes_root="/srv/metalab/homes/",
    )
    assert not result.get("failed"), result
    alice, bob, carol = result["ansible_facts"]["lab_users_resolved"]
    assert alice == {
        "name": "alice",
        "login": "lab-alice",
        "home": "/srv/metalab/homes/alice",
        "quota": "1G",
        "quota_bytes": GiB,
        "gpu": False,
        "state": "present",
        "uid": None,
        "comment": "",
        "email": None,
        "host": None,
    }
    assert (bob["quota_bytes"], bob["gpu"], bob["login"]) == (15 * GiB, True, "lab-bob")
    assert carol["state"] == "absent"
    assert result["changed"] is False


def test_bad_entries_fail_naming_each_one() -> None:
    result = resolve(users=[{"name": "alice"}, {"name": "Bob"}, {"name": "c", "quota": "15GG"}, {"name": "alice"}])
    assert result["failed"] and "ansible_facts" not in result
    msg = result["msg"]
    assert msg.startswith("invalid lab_users, nothing changed: ")
    assert "lab_users[1] (name 'Bob'): invalid name" in msg
    assert "lab_users[2] (name 'c'): invalid quota" in msg
    assert "lab_users[3] (name 'alice'): duplicate name, already used by lab_users[0]" in msg


def test_bad_arguments_are_named() -> None:
    result = resolve(users="alice")
    assert result["failed"]
    result = resolve(users=[], prefix="Lab-")
    assert result["failed"] and "lab_users_prefix 'Lab-' is not POSIX-safe" in result["msg"]


@pytest.mark.parametrize("volume, expected", [(1024 * GiB, []), (500 * GiB, ["'a': quota 600G"])])
def test_quotas_against_the_volume(volume: int, expected: list) -> None:
    resolved = resolve(users=[{"name": "a", "quota": "600G"}, {"name": "b", "quota": "600G", "state": "absent"}])
    users = resolved["ansible_facts"]["lab_users_resolved"]
    errors = lab_users_over_volume(users, volume)
    assert len(errors) == len(expected)
    for error, part in zip(errors, expected):
        assert part in error and "is larger than the homes volume" in error
    assert FilterModule().filters()["lab_users_over_volume"] is lab_users_over_volume


def test_overcommitment_is_a_warning_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    users = resolve(users=[{"name": "a", "quota": "600G"}, {"name": "b", "quota": "600G"}])["ansible_facts"]
    assert lab_users_over_volume(users["lab_users_resolved"], 1024 * GiB) == []
    assert "overcommitted" in capsys.readouterr().err
