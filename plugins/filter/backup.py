# Copyright: metalab contributors
# Apache-2.0
"""The backup role's settings, checked on the controller, and the known_hosts line of an SFTP repository."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.module_utils.rules import USER_NAME, USER_NAME_HELP, parse_duration

DOCUMENTATION = r"""
name: backup_settings_errors
short_description: What is wrong with the lab_backup_* settings, checked on the controller
description:
  - Checks C(lab_backup_repository) (a local path, C(sftp:USER@HOST:/PATH) or another restic backend such as
    C(s3:...)), C(lab_backup_password), C(lab_backup_environment), C(lab_backup_keep), C(lab_backup_max_age) and
    C(lab_backup_randomized_delay); returns one message per problem (empty when everything is valid).
  - For an SFTP repository on a host of the inventory group C(lab_backup_target) (C(target_names) lists those
    hosts' names, C(ansible_host) and C(lab_address)), the repository must be C(sftp:ACCOUNT@TARGET:/repo), ACCOUNT
    being this host's own account there (C(sftp_user), else C(mlb-<host>)).
  - C(backup_sftp_user) gives a lab host's account on the backup target (C(host | backup_sftp_user(explicit)));
    C(backup_sftp_accounts) gives C({host, user, error}) for every client of a backup target.
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
account: "{{ inventory_hostname | metalab.lab.backup_sftp_user(lab_backup_sftp_user) }}"
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
# The backup target's accounts: one per lab host, all in this group (sshd's Match Group), each chrooted to
# <root>/<account> with the repository folder REPO_PATH inside.
SFTP_USER_PREFIX = "mlb-"
SFTP_GROUP = "metalab-backup"
REPO_PATH = "/repo"
SFTP_PARTS = re.compile(r"sftp:(?://)?(?:([^@/:\s]+)@)?([^:/\s]+)(?::(\d+))?[:/](/?\S*)\Z")


def sftp_user_problem(host: object, explicit: object = "") -> tuple[str, str]:
    """(account, "") for a lab host, or ("", message): lab_backup_sftp_user, else mlb-<host> when that is valid."""
    if explicit:
        name = str(explicit)
        if not USER_NAME.match(name) or name == SFTP_GROUP:
            return "", (
                f"lab_backup_sftp_user {name!r} of {host}: not a valid account name ({USER_NAME_HELP};"
                f" not {SFTP_GROUP})"
            )
        return name, ""
    name = f"{SFTP_USER_PREFIX}{host}"
    if not USER_NAME.match(name):
        return "", (
            f"{host}: its backup account {name!r} is no valid user name ({USER_NAME_HELP}); set the host variable"
            f" lab_backup_sftp_user to one, e.g. lab_backup_sftp_user: mlb-gpu1 (then its repository is"
            f" sftp:mlb-gpu1@TARGET:{REPO_PATH})"
        )
    return name, ""


def backup_sftp_user(host, explicit=""):
    name, problem = sftp_user_problem(host, explicit)
    if problem:
        raise AnsibleFilterError(problem)
    return name


def backup_sftp_accounts(clients, explicit=None):
    """[{host, user, error}] for a backup target's clients; explicit maps host -> lab_backup_sftp_user."""
    explicit = explicit or {}
    rows, seen = [], {}
    for host in clients:
        user, error = sftp_user_problem(host, explicit.get(host, ""))
        if user and user in seen:
            error = f"{host} and {seen[user]} have the same backup account {user}: set lab_backup_sftp_user"
        seen.setdefault(user, host)
        rows.append({"host": str(host), "user": user, "error": error})
    return rows


def sftp_repository_problem(repo: str, account: str) -> str:
    """ "" when repo is sftp:ACCOUNT@HOST:/repo (or sftp://ACCOUNT@HOST[:PORT]//repo), else why not."""
    match = SFTP_PARTS.match(repo)
    path = match.group(4) if match else ""
    if match and match.group(1) == account and (path == REPO_PATH or path == "/" + REPO_PATH):
        return ""
    host = match.group(2) if match else "TARGET"
    return (
        f"lab_backup_repository {repo!r} is on the backup target of the inventory, where this host has its own"
        f" account {account} chrooted to its own folder: use sftp:{account}@{host}:{REPO_PATH}"
    )


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
    match = SFTP.match(repo) if isinstance(repo, str) else None
    if match and (match.group(1) or match.group(2)) in (settings.get("target_names") or []):
        account, problem = sftp_user_problem(settings.get("host"), settings.get("sftp_user"))
        problem = problem or sftp_repository_problem(repo, account)
        if problem:
            errors.append(problem)
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
            "backup_sftp_user": backup_sftp_user,
            "backup_sftp_accounts": backup_sftp_accounts,
        }
