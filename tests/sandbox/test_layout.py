"""The lab layout on two nspawn lab hosts (issue 17): a user's account and home exist on her home host only, and
changing her home host by hand (without `labctl users move`) is refused before anything changes.

ly1 and ly2, site.yml with tags base,storage,lab_users (the roles that make accounts and homes): alice is homed on
ly1, bob on ly2. A rerun is changed=0. Then alice's host is set to ly2 in the inventory: the run fails on both hosts
in the settings check, naming her, both hosts and the move command, and no file of either host changed.
About 3.5 minutes on the development machine (two sandboxes up, a converge, a rerun, the refused run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import failures, labctl, playbook, recap, ssh, up

NAMES = ["ly1", "ly2"]
TAGS = "base,storage,lab_users"
HOMES = "/srv/metalab/homes"
LAB_VARS: dict[str, Any] = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "lab_users": [{"name": "alice", "quota": "1G", "host": "ly1"}, {"name": "bob", "quota": "1G", "host": "ly2"}],
}
# What a refused run must leave as it was: the account databases, the uid registry and the homes.
STATE = (
    f"sudo sh -c 'cat /etc/passwd /etc/group /etc/shadow /var/lib/metalab/lab_users.json | sha256sum; ls -A {HOMES}'"
)


def holds(record: dict[str, Any], name: str) -> tuple[bool, bool]:
    """(the host has lab-NAME's account, the host has NAME's home)."""
    account = ssh(record, f"getent passwd lab-{name}").returncode == 0
    home = ssh(record, f"sudo test -d {HOMES}/{name}").returncode == 0
    return account, home


@pytest.fixture(scope="module")
def lab(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """ly1 and ly2 converged once with alice homed on ly1 and bob on ly2; taken down at the end."""
    tmp = tmp_path_factory.mktemp("layout")
    try:
        records = {name: up(name) for name in NAMES}
        sandboxes = tmp / "sandboxes.yml"
        sandboxes.write_text(labctl("inventory", *NAMES).stdout)
        settings = tmp / "lab.yml"
        settings.write_text(json.dumps({"all": {"vars": LAB_VARS}}))
        converge = playbook("site.yml", sandboxes, settings, tags=TAGS)
        assert converge.returncode == 0, failures(converge)
        yield {"records": records, "inventories": [sandboxes, settings], "tmp": tmp}
    finally:
        labctl("down", *NAMES, check=False)


def test_accounts_and_homes_only_on_the_home_host(lab: dict[str, Any]) -> None:
    ly1, ly2 = lab["records"]["ly1"], lab["records"]["ly2"]
    assert holds(ly1, "alice") == (True, True) and holds(ly2, "alice") == (False, False)
    assert holds(ly2, "bob") == (True, True) and holds(ly1, "bob") == (False, False)
    # Every host still keeps every lab account from cron and at, wherever she is homed.
    assert ssh(ly2, "grep -qx lab-alice /etc/cron.deny").returncode == 0


def test_rerun_changes_nothing(lab: dict[str, Any]) -> None:
    rerun = playbook("site.yml", *lab["inventories"], tags=TAGS)
    assert rerun.returncode == 0, failures(rerun)
    assert {host: row["changed"] for host, row in recap(rerun.stdout).items()} == {"ly1": 0, "ly2": 0}


def test_a_home_host_changed_without_a_move_is_refused_and_changes_nothing(lab: dict[str, Any]) -> None:
    records = lab["records"]
    before = {name: ssh(record, STATE).stdout for name, record in records.items()}
    moved = dict(LAB_VARS, lab_users=[{**LAB_VARS["lab_users"][0], "host": "ly2"}, LAB_VARS["lab_users"][1]])
    settings = lab["tmp"] / "moved.yml"
    settings.write_text(json.dumps({"all": {"vars": moved}}))
    result = playbook("site.yml", lab["inventories"][0], settings, tags=TAGS)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    totals = recap(result.stdout)
    assert {host: (row["failed"], row["changed"]) for host, row in totals.items()} == {"ly1": (1, 0), "ly2": (1, 0)}
    assert "lab_users entry 'alice': her home host is 'ly2', which holds nothing of her, but her files are on ly1" in (
        " ".join(output.split())
    )
    assert "labctl users move alice --to ly2" in " ".join(output.split())
    assert {name: ssh(record, STATE).stdout for name, record in records.items()} == before
    assert holds(records["ly2"], "alice") == (False, False)
