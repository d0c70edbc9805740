"""metalab.lab.backup_settings_errors and backup_known_hosts: the backup role's controller-side checks."""

from __future__ import annotations

import re

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.filter.backup import (
    FilterModule,
    backup_known_hosts,
    backup_settings_errors,
    backup_sftp_accounts,
    backup_sftp_user,
)

DEFAULTS = {
    "repository": "/var/backups/metalab-repo",
    "password": "s3cret",
    "environment": {},
    "keep": {"daily": 7, "weekly": 4, "monthly": 6},
    "max_age": "26h",
    "randomized_delay": "1h",
    "schedule": "daily",
    "check_schedule": "weekly",
    "sftp_host_key": "",
    "target_in_inventory": False,
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"repository": "sftp:metalab@backup1:/srv/restic/lab1", "sftp_host_key": "ssh-ed25519 AAAAC3Nza root@b"},
        {"repository": "sftp:metalab@backup1:/srv/restic/lab1", "target_in_inventory": True},
        {"repository": "s3:https://s3.example.org/lab/lab1", "environment": {"AWS_ACCESS_KEY_ID": "AKIA"}},
        {"keep": {"last": 3, "daily": 7}, "max_age": 3600, "schedule": "*-*-* 02:00"},
    ],
)
def test_valid_settings_pass(changes):
    assert backup_settings_errors({**DEFAULTS, **changes}) == []
    assert FilterModule().filters()["backup_settings_errors"] is backup_settings_errors


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"repository": "relative/path"}, "lab_backup_repository"),
        ({"password": ""}, "lab_backup_password must be set"),
        ({"environment": {"RESTIC_PASSWORD": "x"}}, "lab_backup_environment"),
        ({"keep": {"dayly": 7}}, "lab_backup_keep"),
        ({"max_age": "26 hours"}, "lab_backup_max_age"),
        ({"randomized_delay": "1y"}, "lab_backup_randomized_delay"),
        ({"schedule": ""}, "lab_backup_schedule"),
        ({"repository": "sftp:metalab@backup1:/srv/restic/lab1"}, "lab_backup_sftp_host_key must be set"),
    ],
)
def test_each_bad_setting_is_named(changes, words):
    errors = backup_settings_errors({**DEFAULTS, **changes})
    assert len(errors) == 1 and words in errors[0], errors


def test_known_hosts_line_names_the_repository_host():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG root@backup1"
    assert backup_known_hosts(key, "sftp:metalab@backup1:/srv/r") == "backup1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG"
    assert backup_known_hosts(key, "sftp://metalab@10.0.0.5:2222//srv/r").startswith("[10.0.0.5]:2222 ssh-ed25519 ")
    assert backup_known_hosts("backup1 ssh-ed25519 AAAA", "sftp:m@backup1:/r") == "backup1 ssh-ed25519 AAAA"


# One SFTP account per lab host on the backup target (chrooted to its own folder): the name and the repository.
TARGET = {"target_names": ["bk-target", "10.0.0.5"], "target_in_inventory": True, "host": "gpu1", "sftp_user": ""}


@pytest.mark.parametrize(
    ("host", "explicit", "account"),
    [
        ("gpu1", "", "mlb-gpu1"),
        ("bk-lab", None, "mlb-bk-lab"),
        ("x" * 27, "", "mlb-" + "x" * 27),
        ("gpu1.lab.example.org", "mlb-gpu1", "mlb-gpu1"),
        ("GPU1", "lab_gpu1", "lab_gpu1"),
    ],
)
def test_account_of_a_lab_host(host, explicit, account):
    assert backup_sftp_user(host, explicit) == account
    assert FilterModule().filters()["backup_sftp_user"] is backup_sftp_user


@pytest.mark.parametrize(
    ("host", "explicit", "words"),
    [
        ("gpu1.lab.example.org", "", "set the host variable lab_backup_sftp_user"),
        ("GPU1", "", "set the host variable lab_backup_sftp_user"),
        ("x" * 28, "", "set the host variable lab_backup_sftp_user"),
        ("gpu1", "Bad.Name", "lab_backup_sftp_user 'Bad.Name' of gpu1"),
        ("gpu1", "metalab-backup", "not metalab-backup"),
    ],
)
def test_account_that_is_no_user_name_is_refused_naming_the_host(host, explicit, words):
    with pytest.raises(AnsibleFilterError, match=re.escape(words)) as exc:
        backup_sftp_user(host, explicit)
    assert host in str(exc.value)


def test_accounts_of_a_target_name_each_problem():
    rows = backup_sftp_accounts(["gpu1", "gpu2.example.org", "gpu3", "other"], {"gpu3": "mlb-gpu1"})
    assert [(r["host"], r["user"]) for r in rows] == [
        ("gpu1", "mlb-gpu1"),
        ("gpu2.example.org", ""),
        ("gpu3", "mlb-gpu1"),
        ("other", "mlb-other"),
    ]
    assert [bool(r["error"]) for r in rows] == [False, True, True, False]
    assert "gpu2.example.org" in rows[1]["error"] and "same backup account mlb-gpu1" in rows[2]["error"]
    assert backup_sftp_accounts([]) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"repository": "sftp:mlb-gpu1@bk-target:/repo"},
        {"repository": "sftp:mlb-gpu1@10.0.0.5:/repo"},
        {"repository": "sftp://mlb-gpu1@10.0.0.5:2222//repo"},
        {"repository": "sftp:backup1@gpu-b:/repo", "host": "gpu.b", "sftp_user": "backup1"},
        # Not on the inventory's target: any account and path (the admin runs that host).
        {"repository": "sftp:metalab@elsewhere:/srv/restic/gpu1", "sftp_host_key": "ssh-ed25519 AAAA r@e"},
    ],
)
def test_repository_on_the_target_with_its_own_account_passes(changes):
    assert backup_settings_errors({**DEFAULTS, **TARGET, **changes}) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"repository": "sftp:metalab-backup@bk-target:/gpu1"}, "use sftp:mlb-gpu1@bk-target:/repo"),
        ({"repository": "sftp:mlb-gpu2@bk-target:/repo"}, "use sftp:mlb-gpu1@bk-target:/repo"),
        ({"repository": "sftp:mlb-gpu1@10.0.0.5:/repo/x"}, "use sftp:mlb-gpu1@10.0.0.5:/repo"),
        ({"repository": "sftp:bk-target:/repo"}, "use sftp:mlb-gpu1@bk-target:/repo"),
        ({"repository": "sftp:x@bk-target:/repo", "host": "gpu1.example.org"}, "lab_backup_sftp_user"),
    ],
)
def test_repository_on_the_target_with_another_account_or_path_is_refused(changes, words):
    errors = backup_settings_errors({**DEFAULTS, **TARGET, **changes})
    assert len(errors) == 1 and words in errors[0], errors
