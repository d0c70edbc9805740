"""`labctl users move` between two nspawn sandboxes (issue 17): mv1 and mv2 converged with base, storage, lab_users
and session_limits only (metalab-guard, its ledger and metalab-homes), alice homed on mv1 (no account on mv2: the
move makes it, with another uid than on mv1). Her home on
mv1 holds 3000 files, a 64 MiB sparse file, a symlink, a hard link, an ACL and an xattr, her ledger two ended
runtimes. Then: a refusal changes nothing; an interrupted move (labctl stopped between copy and retire, by the test
hook METALAB_MOVE_STOP_AFTER=copy) leaves her on mv1, and the rerun finishes; the home on mv2 is byte-identical
(manifests compared, owners mapped to her uid there); her rows are in mv2's ledger and gone from mv1's; the archive
stays on mv1 and checks; the inventory says mv2; a second run is a no-op. 3-4 minutes on the shared 2-core
development machine (3m37s measured), most of it the sandboxes and the converge (80 s with those tags).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LABCTL, failures, labctl, playbook, ssh, up

from metalab.host.homes import tree

pytestmark = pytest.mark.sandbox

SOURCE, TARGET = "mv1", "mv2"
TAGS = "base,storage,lab_users,session_limits"
HOME = "/srv/metalab/homes/alice"
VARS: dict[str, Any] = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "runtime_image_base_from_host": True,
    "lab_portal_enabled": False,
    # The lab layout (issue 17): alice homed on mv1, bob on mv2; each has an account on her home host only.
    "lab_users": [{"name": "alice", "quota": "1G", "host": SOURCE}, {"name": "bob", "quota": "1G", "host": TARGET}],
}
FILL = Path(__file__).with_name("move_fill.py")


def sh(record: dict[str, Any], command: str, check: bool = True) -> str:
    result = ssh(record, f"sudo bash -c {json.dumps(command)}")
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def manifest(record: dict[str, Any], path: str) -> dict[str, Any]:
    return json.loads(sh(record, f"metalab-homes manifest {path}"))


class Lab:
    def __init__(self, records: dict[str, dict[str, Any]], inventory: Path, cache: Path) -> None:
        self.records, self.inventory, self.cache = records, inventory, cache
        self.src, self.dst = records[SOURCE], records[TARGET]

    def labctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METALAB_") or k == "METALAB_SANDBOX_DIR"}
        env.update(METALAB_CACHE=str(self.cache), METALAB_CONFIG=str(self.cache / "no-config.toml"))
        argv = [LABCTL, *args, "-i", str(self.inventory)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def lab(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("move")
    try:
        records = {name: up(name) for name in (SOURCE, TARGET)}
        sandboxes = yaml.safe_load(labctl("inventory", SOURCE, TARGET).stdout)
        sandboxes["all"]["vars"].update(VARS)
        converge_inventory = tmp / "converge.yml"
        converge_inventory.write_text(yaml.safe_dump(sandboxes))
        # An account holding uid 20000 on mv2 (the first uid lab_users gives): alice gets another uid there, so the
        # move has to re-own her files.
        sh(records[TARGET], "useradd --uid 20000 --no-create-home filler")
        converge = playbook("site.yml", converge_inventory, tags=TAGS)
        assert converge.returncode == 0, failures(converge)
        # The inventory an admin edits (comments kept by the move).
        inventory = tmp / "hosts.yml"
        inventory.write_text("# the move test's lab\n" + yaml.safe_dump(sandboxes))
        script = base64.b64encode(FILL.read_bytes()).decode()
        sh(records[SOURCE], f"echo {script} | base64 -d > /tmp/fill.py && python3 /tmp/fill.py {HOME} lab-alice")
        yield Lab(records, inventory, tmp / "cache")
    finally:
        labctl("down", SOURCE, TARGET, check=False)


def test_move_to_an_unknown_host_changes_nothing(lab: Lab) -> None:
    """A move to a host that is not in the inventory is refused before anything changes (the legitimate move
    follows in the next tests, through the same command)."""
    before = lab.inventory.read_bytes()
    result = lab.labctl("users", "move", "alice", "--to", "nowhere")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not a lab host" in result.stderr
    assert lab.inventory.read_bytes() == before
    assert sh(lab.src, "ls /var/lib/metalab/moved 2>/dev/null | wc -l").strip() == "0"


def test_interrupted_move_rerun_finishes_byte_identical(lab: Lab) -> None:
    source_manifest = manifest(lab.src, HOME)
    assert source_manifest["totals"]["files"] > 3000
    # The layout: no account or home of alice on mv2 before the move (the move makes them).
    assert sh(lab.dst, f"getent passwd lab-alice; test -e {HOME} && echo home", check=False).strip() == ""
    rows_before = sh(lab.src, "metalab-guard usage --json")
    assert '"sessions": 2' in rows_before
    # The interruption: the copy phase ran (home imported on mv2), the old host was never retired.
    env_inventory = lab.inventory
    before = env_inventory.read_bytes()
    result = subprocess.run(
        [LABCTL, "users", "move", "alice", "--to", TARGET, "-i", str(env_inventory)],
        capture_output=True,
        text=True,
        env={**os.environ, "METALAB_CACHE": str(lab.cache), "METALAB_MOVE_STOP_AFTER": "copy"},
        timeout=600,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "interrupted after copy" in result.stderr
    assert env_inventory.read_bytes() == before  # still on mv1
    assert sh(lab.src, f"test -d {HOME} && echo home").strip() == "home"
    # The rerun finishes the same move.
    result = lab.labctl("users", "move", "alice", "--to", TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming the move" in result.stdout
    assert f"labctl provision -i {lab.inventory} --limit {SOURCE},{TARGET} --tags lab_users,runtimes,backup" in (
        result.stdout
    )
    target_manifest = manifest(lab.dst, HOME)
    uid = int(sh(lab.dst, "id -u lab-alice"))
    gid = int(sh(lab.dst, "id -g lab-alice"))
    assert uid != source_manifest["uid"]
    assert (
        tree.compare(source_manifest, target_manifest, {source_manifest["uid"]: uid}, {source_manifest["gid"]: gid})
        == []
    )
    assert any(e["sparse"] for e in target_manifest["entries"] if e["path"] == "sparse.img")
    assert target_manifest["hardlinks"] == [["hardlink-to-notes", "notes.md"]]
    # Her ledger rows followed her; the old host holds the archive only.
    assert '"sessions": 2' in sh(lab.dst, "metalab-guard usage --json")
    assert '"sessions"' not in sh(lab.src, "metalab-guard usage --json")
    assert sh(lab.src, f"test -e {HOME} && echo left; getent passwd lab-alice || true").strip() == ""
    assert sh(lab.dst, "getent passwd lab-alice").split(":")[5] == HOME
    # Her uid there comes from mv2's uid registry (a rerun keeps it); bob, homed there, is untouched.
    assert json.loads(sh(lab.dst, "cat /var/lib/metalab/lab_users.json"))["uids"]["lab-alice"] == uid
    assert sh(lab.dst, "getent passwd lab-bob").startswith("lab-bob:")
    assert "OK" in sh(lab.src, "cd /var/lib/metalab/moved && sha256sum --check alice-*.sha256")
    assert sh(lab.src, "cd /var/lib/metalab/moved && ls alice.mov*").split() == ["alice.moved.json"]
    hosts = yaml.safe_load(lab.inventory.read_text())["all"]["vars"]["lab_users"]
    assert [u.get("host") for u in hosts] == [TARGET, TARGET]
    assert lab.inventory.read_text().startswith("# the move test's lab\n")


def test_second_run_is_a_no_op(lab: Lab) -> None:
    before = lab.inventory.read_bytes()
    moved = sh(lab.src, "ls -l --time-style=+%s /var/lib/metalab/moved")
    result = lab.labctl("users", "move", "alice", "--to", TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already homed on mv2: nothing to do" in result.stdout
    assert lab.inventory.read_bytes() == before
    assert sh(lab.src, "ls -l --time-style=+%s /var/lib/metalab/moved") == moved
