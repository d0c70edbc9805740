"""Every inventory shipped in the repository passes every role's argument spec, checked as Ansible checks it when
a role starts (spec_check.py). A spec that would refuse a shipped inventory fails here, not in a converge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Settings a role must refuse when it starts, and the words of the refusal.
WRONG = {
    "limits not a mapping": ({"lab_session_limits": "12h"}, "session_limits main: dictionary requested"),
    "limits of an unknown kind": ({"lab_session_limits": {"cpus": "12h"}}, "lab_session_limits.cpus"),
    "pids not a number": ({"lab_runtime_resources": {"cpu": {"pids": "many"}}}, "pids"),
    "a misspelt user key": ({"lab_users": [{"name": "alice", "quotas": "1G"}]}, "lab_users.quotas"),
    "an unknown filesystem": ({"lab_homes_fstype": "btrfs"}, "lab_homes_fstype must be one of: xfs, ext4"),
    "reboot not a boolean": ({"lab_reboot_ok": "later"}, "lab_reboot_ok"),
}


@pytest.fixture(scope="module")
def checked():
    cases = {label: variables for label, (variables, _) in WRONG.items()}
    cases["nothing set"] = {}
    done = subprocess.run(
        [sys.executable, str(HERE / "spec_check.py")],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_shipped_inventories_pass_every_role_spec(checked):
    refused = {label: errors for label, errors in checked["inventories"].items() if errors}
    assert refused == {}, f"a role would refuse these inventories when it starts: {refused}"


def test_every_shipped_inventory_is_checked(checked):
    labels = set(checked["inventories"])
    assert {"inventory/example/hosts.yml lab1.example.org", "inventory/example/hosts.yml gpu1.example.org"} <= labels
    assert {
        "inventory/sandbox/demo.yml",
        "molecule/default/molecule.yml all",
        "molecule/lab/molecule.yml all",
        "molecule/metal/molecule.yml all",
    } <= labels
    # The shared molecule base reaches every scenario, templated as Ansible would (a list of CA files).
    default = checked["variables"]["molecule/default/molecule.yml all"]
    assert isinstance(default["lab_extra_ca_certificates"], list)
    assert default["lab_users"][2] == {"name": "carol", "quota": "1G", "state": "absent"}


@pytest.mark.parametrize("label", sorted(WRONG))
def test_a_wrong_setting_is_refused_by_the_spec(checked, label):
    message = WRONG[label][1]
    errors = checked["cases"][label]
    assert any(message in e for e in errors), errors


def test_computed_defaults_pass_their_own_spec(checked):
    """Defaults computed from facts and other roles (session_limits_gpus, lab_users_quota_backend, ...) are
    validated too: a host with nothing set passes."""
    assert checked["cases"]["nothing set"] == []
