"""metalab.lab.backup_settings_errors and backup_known_hosts: the backup role's controller-side checks."""

from __future__ import annotations

import pytest
from ansible_collections.metalab.lab.plugins.filter.backup import (
    FilterModule,
    backup_known_hosts,
    backup_settings_errors,
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
