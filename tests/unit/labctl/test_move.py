"""labctl users move: every refusal comes before anything changes (the inventory byte-identical, no copy phase
run), the legitimate move through the same command runs copy, retire and writes the host with comments kept.
The lab hosts' answers are stand-ins for playbooks/labctl/move.yml's probe (the real run: tests/sandbox/test_move.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.labctl import move
from metalab.labctl.cli import cli

HOSTS = """\
# the lab (comments stay)
all:
  hosts:
    lab1:
    lab2:
  vars:
    lab_users:
      - name: alice  # PI
        quota: 10G
        host: lab1
      - name: bob
        quota: 60G
        host: lab2
      - name: carol
        quota: 10G
        host: lab1
        state: absent
"""
GIB = 1 << 30


def answer(host: str, *, account: bool = True, runs: bool = False, tool: bool = True, **facts: Any) -> dict:
    lines = {"tool": "yes" if tool else "no", "volume_size": 100 * GIB, "volume_avail": 90 * GIB}
    lines.update(home="yes", home_allocated=5 * GIB)
    lines.update(facts)
    return {
        "account": "lab-alice:x:20000:20000::/srv/metalab/homes/alice:/usr/sbin/nologin" if account else "",
        "runtimes_rc": 0,
        "runtimes": json.dumps([{"user": "alice", "host": host}] if runs else []),
        "probe": "\n".join(f"{k}={v}" for k, v in lines.items()),
    }


class FakeLab:
    """Stands in for the playbook runs: records the phases, answers the probe with ``answers``."""

    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers = answers
        self.phases: list[str] = []
        self.moves: list[dict] = []

    def __call__(self, phase: str, inventory: Path, data: dict) -> tuple[dict, list[str]]:
        self.phases.append(phase)
        self.moves.append(data)
        if phase == "probe":
            return self.answers, []
        if phase == "copy":
            return {data["target"]: {"import": {"totals": {"entries": 3, "bytes": 10}}, "ledger": {"user_rows": 2}}}, []
        return {data["source"]: {"archive": f"/var/lib/metalab/moved/alice-{data['stamp']}.tar"}}, []


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeLab]:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(HOSTS)
    monkeypatch.delenv("METALAB_INVENTORY", raising=False)
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    # The layout (issue 17): alice has no account on lab2 before the move; the copy phase makes it.
    fake = FakeLab({"lab1": answer("lab1"), "lab2": answer("lab2", account=False, home="no")})
    monkeypatch.setattr(move, "_playbook", fake)
    return hosts, fake


def run(hosts: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["users", "move", *args, "-i", str(hosts)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "answers", "message"),
    [
        (["dave", "--to", "lab2"], None, "no present lab user named 'dave'"),
        (["carol", "--to", "lab2"], None, "no present lab user named 'carol'"),
        (["alice", "--to", "lab9"], None, "'lab9' is not a lab host"),
        (["alice", "--to", "lab2"], {"lab1": answer("lab1", runs=True)}, "runtime is running; stop it, or add --stop"),
        (["alice", "--to", "lab2"], {"lab2": answer("lab2", volume_size=65 * GIB)}, "does not fit the homes volume"),
        (["alice", "--to", "lab2"], {"lab2": answer("lab2", volume_avail=GIB)}, "the homes volume has 1"),
        (
            ["alice", "--to", "lab2"],
            {"lab2": answer("lab2", account=False, home_foreign="yes")},
            "already holds files that are not copies of /etc/skel",
        ),
        (["alice", "--to", "lab2"], {"lab2": answer("lab2", tool=False)}, "metalab-homes is not installed"),
        (["alice", "--to", "lab2"], {"lab2": answer("lab2", runs=True)}, "has a runtime running there"),
        (
            ["alice", "--to", "lab2"],
            {"lab1": answer("lab1", marker=json.dumps({"stamp": "S", "target": "lab3"}))},
            "a move of alice to lab3 is under way",
        ),
    ],
)
def test_refusals_change_nothing(lab: tuple[Path, FakeLab], args: list[str], answers: Any, message: str) -> None:
    hosts, fake = lab
    if answers:
        fake.answers.update(answers)
    before = hosts.read_bytes()
    code, out = run(hosts, *args)
    assert code == 3, out
    assert message in out
    assert hosts.read_bytes() == before
    assert "copy" not in fake.phases and "retire" not in fake.phases


def test_same_host_is_a_no_op(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    before = hosts.read_bytes()
    code, out = run(hosts, "alice", "--to", "lab1")
    assert code == 0, out
    assert "alice is already homed on lab1: nothing to do" in out
    assert hosts.read_bytes() == before
    assert fake.phases == []


def test_move_runs_every_step_and_writes_the_host_keeping_comments(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert fake.phases == ["probe", "copy", "retire"]
    for text in ("1/4 probe", "2/4 copy", "3 entries verified", "3/4 retire", "archive kept on lab1", "4/4 inventory"):
        assert text in out
    # The copy phase makes her account on lab2 from her entry as it will be (host lab2, her quota and home).
    account = fake.moves[1]["account"]
    assert (account["name"], account["login"], account["host"]) == ("alice", "lab-alice", "lab2")
    assert (account["home"], account["quota_bytes"], account["state"]) == (
        "/srv/metalab/homes/alice",
        10 * GIB,
        "present",
    )
    assert f"labctl provision -i {hosts} --limit lab1,lab2 --tags lab_users,runtimes,backup" in out
    assert hosts.read_text() == HOSTS.replace(
        "quota: 10G\n        host: lab1\n      - name: bob", "quota: 10G\n        host: lab2\n      - name: bob", 1
    )
    assert "# PI" in hosts.read_text()


def test_running_runtime_with_stop_goes_on(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    fake.answers["lab1"] = answer("lab1", runs=True)
    code, out = run(hosts, "alice", "--to", "lab2", "--stop")
    assert code == 0, out
    assert fake.phases == ["probe", "copy", "retire"]


def test_rerun_after_retire_only_writes_the_inventory(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    marker = json.dumps({"stamp": "20260101T000000Z", "target": "lab2", "user": "alice"})
    fake.answers["lab1"] = answer("lab1", account=False, home="no", moved=marker)
    fake.answers["lab2"] = answer("lab2")
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert "resuming the move 20260101T000000Z" in out
    assert fake.phases == ["probe"]
    assert "host: lab2\n      - name: bob" in hosts.read_text()


def test_an_earlier_finished_move_is_not_resumed(lab: tuple[Path, FakeLab]) -> None:
    """alice moved lab1 -> lab2 once, came back; moving her to lab2 again makes a new archive, never the old one."""
    hosts, fake = lab
    old = json.dumps({"stamp": "20250101T000000Z", "target": "lab2", "user": "alice"})
    fake.answers["lab1"] = answer("lab1", moved=old)
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert "new move" in out and "20250101T000000Z" not in out
    assert fake.phases == ["probe", "copy", "retire"]


def test_no_home_host_in_a_lab_of_two_is_refused(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    hosts.write_text(HOSTS.replace("        host: lab1\n      - name: bob", "      - name: bob", 1))
    before = hosts.read_bytes()
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 3, out
    assert "alice has no home host: her lab_users entry needs host: (one of lab1, lab2)" in out
    assert hosts.read_bytes() == before and fake.phases == []


def test_quota_headroom_counts_the_quotas_of_the_targets_users() -> None:
    class Doc:
        users = [
            {"name": "alice", "quota": "10G", "host": "lab1"},
            {"name": "bob", "quota": "60G", "host": "lab2"},
            {"name": "eve", "quota": "5G", "host": "lab2", "state": "absent"},
        ]
        holder: dict = {}

    assert move.headroom(Doc(), "lab2", "alice", ["lab1", "lab2"], 100 * GIB) == 40 * GIB
    assert move.headroom(Doc(), "lab1", "bob", ["lab1", "lab2"], 100 * GIB) == 90 * GIB


def test_the_backup_target_is_no_lab_host_and_the_front_door_converges_too(lab: tuple[Path, FakeLab]) -> None:
    """The lab hosts are layout's (all but lab_backup_target); the next command names the front door as well."""
    hosts, fake = lab
    text = HOSTS.replace(
        "    lab2:\n",
        "    lab2:\n  children:\n    lab_backup_target:\n      hosts:\n        vault:\n"
        "    lab_frontdoor:\n      hosts:\n        door:\n",
        1,
    )
    hosts.write_text(text)
    code, out = run(hosts, "alice", "--to", "vault")
    assert code == 3, out
    assert "'vault' is not a lab host of the inventory (lab hosts: door, lab1, lab2)" in out
    assert hosts.read_text() == text and fake.phases == []
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert "--limit lab1,lab2,door --tags lab_users,runtimes,backup" in out


def test_a_fresh_skel_home_on_the_target_is_no_obstacle(lab: tuple[Path, FakeLab]) -> None:
    """Copies of /etc/skel only (an account made by hand, home_foreign=no): the move goes on (prepare-target empties
    it); the same home with her files is refused above unless the move is being resumed (its marker on lab1)."""
    hosts, fake = lab
    fake.answers["lab2"] = answer("lab2", account=True, home_foreign="no")
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert fake.phases == ["probe", "copy", "retire"]


def test_resuming_with_her_files_already_on_the_target_goes_on(lab: tuple[Path, FakeLab]) -> None:
    hosts, fake = lab
    marker = json.dumps({"stamp": "20260101T000000Z", "target": "lab2", "user": "alice"})
    fake.answers["lab1"] = answer("lab1", marker=marker)
    fake.answers["lab2"] = answer("lab2", account=True, home_foreign="yes")
    code, out = run(hosts, "alice", "--to", "lab2")
    assert code == 0, out
    assert "resuming the move 20260101T000000Z" in out
    assert fake.phases == ["probe", "copy", "retire"]
