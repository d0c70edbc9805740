"""labusers.validate_users: every refusal names the entry; warnings for overcommit."""

from __future__ import annotations

import pytest

from metalab.rules import validate_users

GiB = 1024**3


def test_valid_list_normalised():
    result = validate_users(
        [
            {"name": "alice", "quota": "15G", "gpu": True},
            {"name": "bob", "state": "absent"},
            {"name": "c_3", "uid": 30000},
        ]
    )
    assert result["errors"] == []
    alice, bob, carol = result["users"]
    assert alice == {
        "name": "alice",
        "login": "lab-alice",
        "home": "/srv/metalab/homes/alice",
        "quota": "15G",
        "quota_bytes": 15 * GiB,
        "gpu": True,
        "state": "present",
        "uid": None,
        "comment": "",
        "email": None,
        "host": None,
    }
    assert bob["state"] == "absent" and bob["quota"] == "15G"  # default quota
    assert carol["uid"] == 30000 and carol["gpu"] is False


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "alice"}, {"name": "x"}, {"name": "Bob"}], "lab_users[2] (name 'Bob'): invalid name 'Bob'"),
        ([{"name": "alice", "quota": "15GG"}], "lab_users[0] (name 'alice'): invalid quota: not a size: '15GG'"),
        ([{"name": "root"}], "lab_users[0] (name 'root'): name 'root' is reserved"),
        (
            [{"name": "alice"}, {"name": "alice"}],
            "lab_users[1] (name 'alice'): duplicate name, already used by lab_users[0]",
        ),
        ([{"name": "a", "uid": 30000}, {"name": "b", "uid": 30000}], "lab_users[1] (name 'b'): duplicate uid 30000"),
        ([{"name": "a", "uid": 0}], "lab_users[0] (name 'a'): uid must be an integer from 1000"),
        ([{"name": "a", "gpu": "yes"}], "lab_users[0] (name 'a'): gpu must be true or false, got 'yes'"),
        ([{"name": "a", "state": "gone"}], "lab_users[0] (name 'a'): state must be present or absent"),
        ([{"name": "a", "quote": "15G"}], "lab_users[0] (name 'a'): unknown key(s) quote"),
        ([{"quota": "1G"}], "lab_users[0]: invalid name None"),
        (["alice"], "lab_users[0]: must be a mapping"),
        ([{"name": "a" * 30}], "is longer than 32 characters"),
        ([{"name": "1abc"}], "invalid name '1abc'"),
        ([{"name": "al ice"}], "invalid name 'al ice'"),
        ([{"name": "a", "comment": "x:y"}], "comment must be text without ':'"),
    ],
)
def test_refusals_name_the_entry(entries, message):
    result = validate_users(entries)
    assert any(message in e for e in result["errors"]), result["errors"]


def test_not_a_list():
    assert validate_users({"name": "a"})["errors"] == ["lab_users must be a list of entries, got dict"]


def test_quota_larger_than_volume_is_an_error_sum_is_a_warning():
    too_big = validate_users([{"name": "a", "quota": "2T"}], volume_size=1024**4)
    assert "lab_users entry 'a': quota 2T is larger than the homes volume (1T)" in too_big["errors"]
    over = validate_users([{"name": "a", "quota": "600G"}, {"name": "b", "quota": "600G"}], volume_size=1024**4)
    assert over["errors"] == []
    assert "overcommitted" in over["warnings"][0]
    # absent users do not count
    fine = validate_users(
        [{"name": "a", "quota": "600G"}, {"name": "b", "quota": "600G", "state": "absent"}], volume_size=1024**4
    )
    assert fine["warnings"] == []


def test_bad_default_quota_and_prefix():
    result = validate_users([{"name": "a"}], default_quota="lots", prefix="Lab ")
    assert any(e.startswith("lab_users_default_quota") for e in result["errors"])
    assert any("lab_users_prefix" in e for e in result["errors"])


def test_importable_without_ansible_objects():
    import ansible_collections.metalab.lab.plugins.module_utils.labusers as mod

    assert "AnsibleModule" not in vars(mod)


@pytest.mark.parametrize("name", ["alice\n", "alice\r", " alice", "alice ", "al ice", "alice\n\n"])
def test_name_is_matched_in_full(name):
    # "$" in a pattern also matches before a trailing newline: "alice\n" must still be refused.
    result = validate_users([{"name": name}])
    assert result["users"] == []
    assert result["errors"] == [
        "lab_users[0] (name " + repr(name) + "): invalid name " + repr(name) + ": use 1-31 "
        "characters, lowercase letters, digits, _ and -, starting with a letter or _"
    ]


def test_prefix_is_matched_in_full():
    assert "is not POSIX-safe" in validate_users([{"name": "alice"}], prefix="lab-\n")["errors"][0]
