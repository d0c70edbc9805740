"""Moving a user (issue 17): `labctl users move alice --to ml-lab2` on the converged lab.

alice's home on ml-lab1 gets 3000 files, a 64 MiB sparse file, a symlink, a hard link, an ACL and an xattr; her
ledger two ended CPU runtimes of 2 h 15 min within the last 24 hours (her CPU budget is 2 h: she cannot start again
today, on any host). A move while her runtime runs is refused and changes nothing; an interrupted move (labctl stopped
between copy and retire by the test hook METALAB_MOVE_STOP_AFTER=copy) leaves her on ml-lab1 and the rerun finishes;
her home on ml-lab2 is byte-identical (manifests of every file compared, owners mapped to her uid there). After the
converge the move prints, the front door sends her requests to ml-lab2, and the budget she spent on ml-lab1 refuses
her start there, while bob starts through the same command.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from conftest import DOOR, HOSTS, INTERNAL_LOG, LAB1, LAB2, Lab, PortalClient
from playbook_output import failures

from metalab.host.homes import tree

HOME = "/srv/metalab/homes/alice"
FILL = Path(__file__).with_name("move_fill.py")
SPENT_HOURS = ("1.5", "0.75")


def manifest(lab: Lab, name: str) -> dict[str, Any]:
    return json.loads(lab.sh(name, f"metalab-homes manifest {HOME}"))


def alice_usage(lab: Lab, name: str) -> list[dict[str, Any]]:
    """alice's rows of `metalab-guard usage` on a host (seconds and sessions per kind, the ledger's whole history)."""
    return [row for row in json.loads(lab.sh(name, "metalab-guard usage --json"))["usage"] if row["user"] == "alice"]


def homes_in_inventory(lab: Lab) -> dict[str, str]:
    users = yaml.safe_load(lab.inventory.read_text())["all"]["vars"]["lab_users"]
    return {u["name"]: u["host"] for u in users}


def test_a_move_while_her_runtime_runs_or_to_no_lab_host_is_refused_and_changes_nothing(lab: Lab) -> None:
    if lab.run(LAB1, "podman container exists metalab-alice").rc != 0:
        lab.sh(LAB1, "metalab-guard start alice")
    before = lab.inventory.read_bytes()
    nowhere = lab.labctl("users", "move", "alice", "--to", "nowhere")
    assert nowhere.returncode == 3 and "'nowhere' is not a lab host" in nowhere.stderr, nowhere.stderr
    result = lab.labctl("users", "move", "alice", "--to", LAB2)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"{LAB1}: alice's runtime is running; stop it, or add --stop" in result.stderr
    assert lab.inventory.read_bytes() == before
    assert lab.run(LAB1, "podman container exists metalab-alice").rc == 0
    assert lab.holds(LAB2, "alice") == (False, False)


def test_an_interrupted_move_and_its_rerun_leave_her_home_byte_identical_on_the_target(lab: Lab) -> None:
    script = base64.b64encode(FILL.read_bytes()).decode()
    lab.sh(LAB1, f"echo {script} | base64 -d > /tmp/fill.py && python3 /tmp/fill.py {HOME} lab-alice {LAB1} "
           + " ".join(SPENT_HOURS))  # fmt: skip
    spent = alice_usage(lab, LAB1)
    assert [row["kind"] for row in spent] == ["cpu"] and spent[0]["seconds"] >= 2.25 * 3600, spent
    before = lab.inventory.read_bytes()
    interrupted = lab.labctl("users", "move", "alice", "--to", LAB2, "--stop", env={"METALAB_MOVE_STOP_AFTER": "copy"})
    assert interrupted.returncode == 1, interrupted.stdout + interrupted.stderr
    assert f"interrupted after copy (METALAB_MOVE_STOP_AFTER); alice stays on {LAB1}" in interrupted.stderr
    assert lab.inventory.read_bytes() == before
    assert lab.holds(LAB1, "alice") == (True, True)
    assert lab.run(LAB1, "podman container exists metalab-alice").rc != 0  # --stop stopped her runtime
    # Her home as the move found it, her runtime stopped (a kernel writes its history as it ends).
    source_manifest = manifest(lab, LAB1)
    assert source_manifest["totals"]["files"] > 3000

    result = lab.labctl("users", "move", "alice", "--to", LAB2, "--stop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming the move" in result.stdout
    target_manifest = manifest(lab, LAB2)
    uid, gid = (int(lab.sh(LAB2, f"id -{flag} lab-alice")) for flag in ("u", "g"))
    mapping = ({source_manifest["uid"]: uid}, {source_manifest["gid"]: gid})
    assert tree.compare(source_manifest, target_manifest, *mapping) == []
    assert any(e["sparse"] for e in target_manifest["entries"] if e["path"] == "sparse.img")
    assert target_manifest["hardlinks"] == [["hardlink-to-notes", "notes.md"]]
    # Her ledger rows moved with her; the old host keeps the checksummed archive only; the inventory says ml-lab2,
    # its comment kept.
    assert [(r["kind"], r["sessions"]) for r in alice_usage(lab, LAB2)] == [("cpu", spent[0]["sessions"])]
    assert alice_usage(lab, LAB1) == []
    assert lab.holds(LAB1, "alice") == (False, False)
    assert "OK" in lab.sh(LAB1, "cd /var/lib/metalab/moved && sha256sum --check alice-*.sha256")
    assert homes_in_inventory(lab)["alice"] == LAB2
    assert lab.inventory.read_text().startswith("# the lab scenario's lab")
    # A second run is a no-op.
    again = lab.labctl("users", "move", "alice", "--to", LAB2)
    assert again.returncode == 0 and f"already homed on {LAB2}: nothing to do" in again.stdout, again.stdout


def test_after_the_printed_converge_she_is_served_from_her_new_home_and_her_budget_counts_there(
    lab: Lab, passwords
) -> None:
    assert homes_in_inventory(lab)["alice"] == LAB2, "the move above did not finish"
    converge = lab.labctl(
        "provision", "--limit", f"{LAB1},{LAB2},{DOOR}", "--tags", "lab_users,runtimes,backup", timeout=1500
    )
    assert converge.returncode == 0, failures(converge)
    # Her rows moved with her: the 2 h 15 min she spent on ml-lab1 refuse a start on ml-lab2 (CPU budget 2 h)...
    refused = lab.run(LAB2, "metalab-guard start alice")
    assert refused.rc != 0 and "cpu budget exhausted" in refused.stdout + refused.stderr, refused
    assert lab.run(LAB2, "podman container exists metalab-alice").rc != 0
    assert alice_usage(lab, LAB2)[0]["seconds"] >= 2.25 * 3600
    # labctl usage shows the whole lab: her hours once, from her new home host; every user's row is there.
    lab_usage = lab.labctl("usage", "--json")
    assert lab_usage.returncode == 0, lab_usage.stderr
    rows = {row["user"]: row for row in json.loads(lab_usage.stdout)}
    assert rows["alice"]["hosts"] == LAB2 and rows["alice"]["seconds"] >= 2.25 * 3600, rows
    assert {"alice", "bob", "carol"} <= set(rows), rows
    # ... while bob, who spent nothing, starts through the same command.
    lab.sh(LAB2, "metalab-guard stop bob")
    lab.sh(LAB2, "metalab-guard start bob")
    assert lab.run(LAB2, "podman container exists metalab-bob").rc == 0
    # labctl session list shows the whole lab's runtimes, each on its home host; none of alice's.
    listed = lab.labctl("session", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    runtimes = {(row["user"], row["host"]) for row in json.loads(listed.stdout)}
    assert {("bob", LAB2), ("carol", DOOR)} <= runtimes and not any(u == "alice" for u, _ in runtimes), runtimes
    # The one address sends her to ml-lab2 now: her portal status comes from there, her requests go there.
    client = PortalClient(lab.base_url)
    client.login("alice", passwords["alice"])
    assert client.status()["host"] == LAB2
    marker = uuid.uuid4().hex
    client.get(f"/user/alice/api/status?{marker}", headers={"Authorization": "token x"})
    assert marker in lab.sh(LAB2, f"grep -F {marker} {INTERNAL_LOG}")
    assert all(lab.run(name, f"grep -qF {marker} {INTERNAL_LOG}").rc != 0 for name in HOSTS if name != LAB2)
