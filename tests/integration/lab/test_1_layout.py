"""The lab layout (issue 17): a user's account and home exist on her home host only, and changing her home host in the
inventory without `labctl users move` is refused on every host before anything changes."""

from __future__ import annotations

import json

from conftest import DOOR, HOMED, HOSTS, LAB1, LAB2, Lab
from playbook_output import recap

# What a refused run must leave as it was: the account databases, the uid registry and the homes.
STATE = "cat /etc/passwd /etc/group /etc/shadow /var/lib/metalab/lab_users.json | sha256sum; ls -A /srv/metalab/homes"


def test_accounts_and_homes_only_on_the_home_host(lab: Lab) -> None:
    for user, home in HOMED.items():
        for name in HOSTS:
            assert lab.holds(name, user) == ((True, True) if name == home else (False, False)), (user, name)
    # Every host still keeps every lab account from cron and at, wherever she is homed.
    for name in HOSTS:
        denied = set(lab.sh(name, "cat /etc/cron.deny").split())
        assert {f"lab-{user}" for user in HOMED} <= denied, name


def test_a_home_host_changed_without_a_move_is_refused_and_changes_nothing(lab: Lab, tmp_path) -> None:
    before = {name: lab.sh(name, STATE) for name in HOSTS}
    inventory = lab.admin_inventory()
    users = inventory["all"]["vars"]["lab_users"]
    for entry in users:
        if entry["name"] == "alice":
            entry["host"] = LAB2
    edited = tmp_path / "edited.yml"
    edited.write_text(json.dumps(inventory))
    run = lab.playbook(edited, tags="base,storage,lab_users")
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, output[-3000:]
    assert (
        f"lab_users entry 'alice': her home host is '{LAB2}', which holds nothing of her, but her files are on {LAB1}"
        in (output)
    )
    assert f"labctl users move alice --to {LAB2}" in output
    totals = recap(run.stdout)
    assert {name: (row["failed"], row["changed"]) for name, row in totals.items()} == {h: (1, 0) for h in HOSTS}
    assert {name: lab.sh(name, STATE) for name in HOSTS} == before
    assert lab.holds(LAB2, "alice") == (False, False) and lab.holds(DOOR, "alice") == (False, False)
