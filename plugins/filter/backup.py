# Copyright: metalab contributors
# Apache-2.0
"""The backup role's settings, checked on the controller, and the known_hosts line of an SFTP repository."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible_collections.metalab.lab.plugins.module_utils.rules import parse_duration

DOCUMENTATION = r"""
name: backup_settings_errors
short_description: What is wrong with the lab_backup_* settings, checked on the controller
description:
  - Checks C(lab_backup_repository) (a local path, C(sftp:USER@HOST:/PATH) or another restic backend such as
    C(s3:...)), C(lab_backup_password), C(lab_backup_environment), C(lab_backup_keep), C(lab_backup_max_age) and
    C(lab_backup_randomized_delay); returns one message per problem (empty when everything is valid).
  - The filter C(backup_known_hosts) turns C(lab_backup_sftp_host_key) into a known_hosts line for the
    repository's host; C(duration_seconds) turns a duration such as C(26h) into seconds.
positional: ""
options:
  _input:
    description: The settings, a dict of the lab_backup_* variables without their C(lab_backup_) prefix.
    type: dict
    required: true
"""

EXAMPLES = r"""
errors: >-
  {{ {'repository': lab_backup_repository, 'password': lab_backup_password, 'keep': lab_backup_keep}
     | metalab.lab.backup_settings_errors }}
line: "{{ lab_backup_sftp_host_key | metalab.lab.backup_known_hosts(lab_backup_repository) }}"
"""

RETURN = r"""
_value:
  description: Messages naming the offending setting; empty when the settings are valid.
  type: list
  elements: str
"""

SFTP = re.compile(r"sftp:(?:[^@/:\s]+@)?([^:/\s]+):\S*\Z|sftp://(?:[^@/:\s]+@)?([^:/\s]+)(?::(\d+))?/\S*\Z")
BACKEND = re.compile(r"(s3|b2|azure|gs|rest|swift|rclone):\S+\Z")
KEEP = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEY_TYPE = re.compile(r"(ssh-|ecdsa-|sk-)")


def backup_settings_errors(settings):
    errors = []
    repo = settings.get("repository")
    if not isinstance(repo, str) or not (repo.startswith("/") or SFTP.match(repo) or BACKEND.match(repo)):
        errors.append(
            f"lab_backup_repository {repo!r}: expected /local/path, sftp:USER@HOST:/PATH or a restic backend (s3:...)"
        )
    password = settings.get("password")
    if not isinstance(password, str) or not password.strip() or "\n" in password.strip():
        errors.append("lab_backup_password must be set (one line; keep it in Ansible Vault)")
    env = settings.get("environment")
    if not isinstance(env, Mapping) or any(
        not ENV_NAME.match(str(k)) or "\n" in str(v) or str(k).startswith("RESTIC_PASSWORD") for k, v in env.items()
    ):
        errors.append(
            "lab_backup_environment must map variable names to one-line values (and hold no RESTIC_PASSWORD*)"
        )
    keep = settings.get("keep")
    if (
        not isinstance(keep, Mapping)
        or not keep
        or any(k not in KEEP or isinstance(v, bool) or not isinstance(v, int) or v < 0 for k, v in keep.items())
    ):
        errors.append(f"lab_backup_keep {keep!r}: expected counts for {', '.join(KEEP)}, e.g. {{daily: 7, weekly: 4}}")
    for key in ("max_age", "randomized_delay"):
        try:
            seconds = parse_duration(settings.get(key))
            if key == "max_age" and seconds <= 0:
                errors.append("lab_backup_max_age must be more than 0")
        except ValueError as exc:
            errors.append(f"lab_backup_{key}: {exc}")
    for key in ("schedule", "check_schedule"):
        value = settings.get(key)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            errors.append(f"lab_backup_{key} must be a systemd OnCalendar expression such as daily or *-*-* 02:00")
    if isinstance(repo, str) and repo.startswith("sftp:") and not settings.get("sftp_host_key") \
            and not settings.get("target_in_inventory"):  # fmt: skip
        errors.append(
            "lab_backup_sftp_host_key must be set for an sftp: repository whose host is not in the inventory group"
            " lab_backup_target (the line of its /etc/ssh/ssh_host_ed25519_key.pub)"
        )
    return errors


def backup_known_hosts(key_line, repository):
    """A known_hosts line: a bare key ("ssh-ed25519 AAAA... comment") gets the repository's host (and port)."""
    text = " ".join(str(key_line or "").split())
    if not text:
        return ""
    if not KEY_TYPE.match(text):
        return text
    match = SFTP.match(str(repository))
    if not match:
        return text
    host = match.group(1) or match.group(2)
    port = match.group(3)
    name = f"[{host}]:{port}" if port and port != "22" else host
    return f"{name} {' '.join(text.split()[:2])}"


def duration_seconds(value):
    return parse_duration(value)


class FilterModule:
    def filters(self):
        return {
            "backup_settings_errors": backup_settings_errors,
            "backup_known_hosts": backup_known_hosts,
            "duration_seconds": duration_seconds,
        }
