"""Bad lab_users input fails the whole site.yml run before anything changes on the host (docs/architecture.md).

One nspawn host, first fresh, then converged. Each bad run must: exit non-zero, name the offending entry, report
changed=0, and leave every file on the host as it was. "As it was" is checked with a marker file: after the
run, nothing outside the journal, /run and /tmp is newer than the marker (a no-change rerun of these roles
touches nothing else either). cron is paused meanwhile: on a converged host the guard's run every minute writes
its ledger and metrics, and its first run compiles its package. The runtime roles other than session_limits
are skipped by tags (they build a container image, minutes).
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from conftest import failures, labctl, playbook, recap, ssh, up

NAME = "bad1"
TAGS = "base,storage,lab_users,session_limits"
HOST_VARS = {"lab_homes_device": "none", "lab_quota_required": False, "runtime_image_base_from_host": True}
GOOD = [{"name": "alice", "quota": "1G"}, {"name": "bob", "quota": "1G"}]
MARKER = "/run/metalab-test-marker"
# What a run may touch on the host without changing it: logs, runtime state, the connection's scratch space
# (Ansible's and Mitogen's ~/.ansible of the admin and of root, and so the mtime of their home directories).
CHANGED_FILES = (
    f"sudo find / -xdev -newer {MARKER} -not -path '/var/log/*' -not -path '/tmp*' -not -path '/run*' "
    "-not -path '/home/labadmin/.ansible*' -not -path '/root/.ansible*' -not -path '/var/lib/sudo*' "
    "-not -path '/' -not -path /root -not -path /home/labadmin -print"
)
# Stop cron, then wait until a guard run it may have started just before has ended ('[m]' keeps pgrep from
# matching this very command line).
# cron (the guard) and metalab's own timers (home usage, metrics, backups) write on their own schedule: paused for the
# check, and exactly the timers that were active started again afterwards (their list is kept under /run).
TIMERS = "/run/metalab-test-timers"
PAUSE_CRON = (
    "sudo systemctl list-units --type=timer --state=active --plain --no-legend 'metalab-*' | cut -d' ' -f1 "
    f"| sudo tee {TIMERS} >/dev/null && sudo systemctl stop cron $(cat {TIMERS}) && "
    "for i in $(seq 100); do pgrep -f '[m]etalab-(guard|backup)' >/dev/null || exit 0; "
    "sleep 0.1; done; echo 'a guard run did not end' >&2; exit 1"
)
RESUME_CRON = f"sudo systemctl start cron $(cat {TIMERS})"
STATE = (
    "sudo sha256sum /etc/passwd /etc/group /etc/shadow; sudo ls -ln /srv/metalab/homes 2>&1; "
    "sudo cat /var/lib/metalab/lab_users.json"
)


def _site(sandboxes: Path, lab_users: list, tmp_path: Path, **settings) -> subprocess.CompletedProcess[str]:
    lab = tmp_path / "lab.yml"
    lab.write_text(json.dumps({"all": {"vars": {**HOST_VARS, "lab_users": lab_users, **settings}}}))
    return playbook("site.yml", sandboxes, lab, tags=TAGS)


@contextmanager
def _cron_paused(record: dict) -> Iterator[None]:
    paused = ssh(record, PAUSE_CRON)
    assert paused.returncode == 0, paused.stderr
    try:
        yield
    finally:
        assert ssh(record, RESUME_CRON).returncode == 0


def _refused_without_change(
    record: dict, sandboxes: Path, lab_users: list, tmp_path: Path, names: str, **settings
) -> str:
    with _cron_paused(record):
        before = ssh(record, STATE).stdout
        assert ssh(record, f"sudo touch {MARKER}").returncode == 0
        result = _site(sandboxes, lab_users, tmp_path, **settings)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert names in output, output[-3000:]
        totals = recap(result.stdout)[NAME]
        assert totals["failed"] == 1 and totals["changed"] == 0, totals
        changed = ssh(record, CHANGED_FILES)
        assert changed.returncode == 0 and changed.stdout == "", "files changed by a refused run:\n" + changed.stdout
        assert ssh(record, STATE).stdout == before
    return output


@pytest.fixture(scope="module")
def host(state_dir, tmp_path_factory):
    try:
        record = up(NAME)
        sandboxes = tmp_path_factory.mktemp("bad-input") / "sandboxes.yml"
        sandboxes.write_text(labctl("inventory", NAME).stdout)
        yield record, sandboxes
    finally:
        labctl("down", NAME, check=False)


def test_fresh_host_is_not_touched_by_bad_input(host, tmp_path):
    record, sandboxes = host
    # An invalid name, a duplicate and an unreadable quota: all three are reported, by index and name.
    bad = [*GOOD, {"name": "Bob!", "quota": "1G"}, {"name": "alice"}, {"name": "carol", "quota": "lots"}]
    output = _refused_without_change(record, sandboxes, bad, tmp_path, "lab_users[2] (name 'Bob!')")
    assert "lab_users[3] (name 'alice'): duplicate name, already used by lab_users[0]" in output
    assert "lab_users[4] (name 'carol'): invalid quota" in output
    # A quota larger than the homes volume is only known on the host: the play reads the volume before its first
    # change (storage's read-only preflight, run first by playbooks/tasks/check_settings.yml).
    _refused_without_change(
        record, sandboxes, [{"name": "alice", "quota": "900T"}], tmp_path, "larger than the homes volume"
    )  # fmt: skip
    assert ssh(record, "test -e /etc/cron.deny || test -e /etc/metalab || echo untouched").stdout.strip() == (
        "untouched"
    )


def test_converged_host_keeps_users_and_data_when_input_is_bad(host, tmp_path):
    record, sandboxes = host
    converge = _site(sandboxes, GOOD, tmp_path)
    assert converge.returncode == 0, failures(converge)
    assert ssh(record, "echo notes | sudo tee /srv/metalab/homes/bob/notes.txt >/dev/null").returncode == 0

    # bob removed and alice's quota raised in the same list as a bad entry: nothing of it may happen.
    bad = [{"name": "alice", "quota": "2G"}, {"name": "bob", "state": "absent"}, {"name": "x" * 40}]
    _refused_without_change(record, sandboxes, bad, tmp_path, "lab_users[2] (name '" + "x" * 40 + "')")
    assert ssh(record, "sudo cat /srv/metalab/homes/bob/notes.txt").stdout == "notes\n"

    # A quota larger than the homes volume, with bob's removal in the same list.
    too_big = [{"name": "alice", "quota": "900T"}, {"name": "bob", "state": "absent"}]
    _refused_without_change(record, sandboxes, too_big, tmp_path, "larger than the homes volume")

    # A session setting the guard would refuse fails the play before base, although session_limits runs last:
    # bob's removal in the same run does not happen.
    _refused_without_change(
        record, sandboxes, GOOD[:1] + [{"name": "bob", "state": "absent"}], tmp_path,
        "lab_session_overrides.alice: user override limits.gpu: invalid duration '1y'",
        lab_session_overrides={"alice": {"limits": {"gpu": "1y"}}},
    )  # fmt: skip
    assert ssh(record, "sudo cat /srv/metalab/homes/bob/notes.txt").stdout == "notes\n"
    # A wrong type is refused by the role's argument spec, also checked at the start of the play.
    _refused_without_change(
        record, sandboxes, GOOD[:1], tmp_path, "lab_session_limits", lab_session_limits="12h"
    )  # fmt: skip
    assert ssh(record, "sudo cat /srv/metalab/homes/bob/notes.txt").stdout == "notes\n"

    rerun = _site(sandboxes, GOOD, tmp_path)
    assert rerun.returncode == 0 and recap(rerun.stdout)[NAME]["changed"] == 0, rerun.stdout[-3000:]
