"""labctl users: round-trip edits of lab_users, validation before any write, roster import, listing."""

from __future__ import annotations

import csv
import difflib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.labctl import inventory as users_inventory
from metalab.labctl.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(FIXTURES / "inventory", tmp_path / "inventory")
    monkeypatch.delenv("METALAB_INVENTORY", raising=False)
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path / "inventory" / "hosts.yml"


def changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def labctl(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_add_keeps_comments_order_and_quoting(inventory: Path) -> None:
    before = inventory.read_text()
    code, out = labctl("users", "add", "zoe", "--quota", "12G", "--gpu", "-i", str(inventory))
    assert code == 0, out
    assert "added zoe" in out
    removed, added = changes(before, inventory.read_text())
    assert removed == []
    # The last entry is in flow style: the new one follows it, on the lab's only GPU host (placed, and said so).
    assert added == ["      - {name: zoe, quota: 12G, gpu: true, host: gpu1.example.org}"]
    assert "placed zoe -> gpu1.example.org: the most quota headroom among the hosts for a GPU user" in out


def test_add_block_style_keeps_the_comment_that_follows_the_list(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(
        "all:\n  hosts:\n    lab1:\n  vars:\n    lab_users:\n    - name: alice   # PI\n      quota: 30G\n"
        "    - name: bob\n      gpu: true  # the GPU one\n\n    # Session limits per runtime kind.\n"
        "    lab_session_limits: {cpu: 12h, gpu: 4h}\n"
    )
    before = hosts.read_text()
    users_inventory.add_users(hosts, [("zoe", None, False)])
    after = hosts.read_text()
    removed, added = changes(before, after)
    assert removed == []
    assert added == ["    - name: zoe", "      gpu: false"]
    assert after.index("name: zoe") < after.index("# Session limits")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad!"], "lab_users[3] (name 'Bad!'): invalid name"),
        (["bob"], "lab_users[3] (name 'bob'): duplicate name"),
        (["dora", "--quota", "15GG"], "lab_users[3] (name 'dora'): invalid quota"),
        (["root"], "reserved"),
    ],
)
def test_invalid_input_leaves_the_file_byte_identical(inventory: Path, args: list[str], message: str) -> None:
    before = inventory.read_bytes()
    code, out = labctl("users", "add", *args, "-i", str(inventory))
    assert code == 1
    assert message in out
    assert "nothing written" in out
    assert inventory.read_bytes() == before
    assert sorted(p.name for p in inventory.parent.iterdir()) == ["group_vars", "hosts.yml"]  # no temp file left


def test_remove_sets_state_absent(inventory: Path) -> None:
    before = inventory.read_text()
    code, out = labctl("users", "remove", "bob", "-i", str(inventory))
    assert code == 0, out
    removed, added = changes(before, inventory.read_text())
    assert (removed, added) == ([], ["        state: absent"])
    code, out = labctl("users", "remove", "bob", "-i", str(inventory))
    assert code == 0 and "already absent" in out


def test_remove_unknown_user(inventory: Path) -> None:
    before = inventory.read_bytes()
    code, out = labctl("users", "remove", "nobody-here", "-i", str(inventory))
    assert code == 1 and "no lab user named 'nobody-here'" in out
    assert inventory.read_bytes() == before


def test_roster(inventory: Path) -> None:
    before = inventory.read_text()
    code, out = labctl("users", "add", "--csv", str(FIXTURES / "roster.csv"), "-i", str(inventory))
    assert code == 0, out
    removed, added = changes(before, inventory.read_text())
    assert removed == []
    # Placed in turn, each said so: dave on the only GPU host; erin (15G by default) on lab2, the emptiest; then
    # lab1 and lab2 have the same headroom (1T - 15G) and frank goes to the first by name.
    assert added == [
        "      - {name: dave, quota: 20G, gpu: true, host: gpu1.example.org}",
        "      - {name: erin, gpu: false, host: lab2.example.org}",
        "      - {name: frank, quota: 5G, gpu: false, host: lab1.example.org}",
    ]
    assert "placed erin -> lab2.example.org: the most quota headroom among the hosts for a CPU user" in out
    assert "a tie, broken by name" in out.split("placed frank", 1)[1].splitlines()[0]


def test_roster_with_one_bad_row_writes_nothing(inventory: Path, tmp_path: Path) -> None:
    roster = tmp_path / "class.csv"
    roster.write_text("name,quota,gpu\ngus,10G,no\nhal,10GG,no\n")
    before = inventory.read_bytes()
    code, out = labctl("users", "add", "--csv", str(roster), "-i", str(inventory))
    assert code == 1 and "'hal'" in out and "invalid quota" in out
    assert inventory.read_bytes() == before
    roster.write_text("name,quota,gpu\ngus,10G,maybe\n")
    code, out = labctl("users", "add", "--csv", str(roster), "-i", str(inventory))
    assert code == 1 and "class.csv:2: gpu must be true or false" in out
    roster.write_text("login,quota\ngus,10G\n")
    code, out = labctl("users", "add", "--csv", str(roster), "-i", str(inventory))
    assert code == 1 and "name,quota,gpu" in out
    assert inventory.read_bytes() == before


def test_list_formats(inventory: Path) -> None:
    code, out = labctl("users", "list", "--json", "-i", str(inventory))
    assert code == 0, out
    assert json.loads(out) == [
        {"name": "alice", "quota": "30G", "gpu": True, "state": "present"},
        {"name": "bob", "quota": "15G", "gpu": False, "state": "present"},
        {"name": "carol", "quota": "10G", "gpu": False, "state": "present"},
    ]
    code, out = labctl("users", "list", "--csv", "-i", str(inventory))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0] == {"name": "alice", "quota": "30G", "gpu": "True", "state": "present"}
    code, out = labctl("users", "list", "-i", str(inventory))
    assert code == 0 and "carol" in out and "lab_users in" in out


def test_inventory_from_environment(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_INVENTORY", str(inventory))
    monkeypatch.setenv("METALAB_OUTPUT", "json")
    code, out = labctl("users", "list")
    assert code == 0 and json.loads(out)[0]["name"] == "alice"


def test_no_inventory_is_a_clear_error(inventory: Path) -> None:
    code, out = labctl("users", "list")
    assert code == 1 and "no inventory given" in out


def test_group_vars_file_is_found_and_edited(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    lab1:\n")
    gv = tmp_path / "group_vars" / "all.yml"
    gv.write_text("---\n# users of the lab\nlab_users:\n  - name: alice\n    quota: 15G  # default\n")
    doc = users_inventory.add_users(tmp_path / "hosts.yml", [("bob", "20G", True)])
    assert doc.path == gv
    assert gv.read_text() == (
        "---\n# users of the lab\nlab_users:\n  - name: alice\n    quota: 15G  # default\n"
        "  - name: bob\n    quota: 20G\n    gpu: true\n"
    )
    assert (tmp_path / "hosts.yml").read_text() == "all:\n  hosts:\n    lab1:\n"


def test_first_user_goes_into_group_vars_all_directory(tmp_path: Path) -> None:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    lab1:\n")
    doc = users_inventory.add_users(tmp_path / "hosts.yml", [("alice", None, False)])
    assert doc.path == tmp_path / "group_vars" / "all" / "lab_users.yml"
    assert doc.path.read_text() == "lab_users:\n- name: alice\n  gpu: false\n"


def test_first_user_goes_into_hosts_all_vars(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    lab1:  # the only host\n")
    users_inventory.add_users(hosts, [("alice", None, True)])
    assert hosts.read_text() == (
        "all:\n  hosts:\n    lab1:  # the only host\n  vars:\n    lab_users:\n    - name: alice\n      gpu: true\n"
    )


def test_lab_users_in_two_places_is_refused(inventory: Path) -> None:
    (inventory.parent / "group_vars" / "all" / "users.yml").write_text("lab_users: []\n")
    code, out = labctl("users", "add", "zoe", "-i", str(inventory))
    assert code == 1 and "keep it in one place" in out


def test_file_mode_is_kept(inventory: Path) -> None:
    inventory.chmod(0o640)
    users_inventory.add_users(inventory, [("zoe", None, False)])
    assert inventory.stat().st_mode & 0o777 == 0o640


def test_usage_errors(inventory: Path) -> None:
    code, out = labctl("users", "add", "-i", str(inventory))
    assert code == 2 and "either NAME or --csv" in out
    code, out = labctl("users", "add", "--csv", str(FIXTURES / "roster.csv"), "--gpu", "-i", str(inventory))
    assert code == 2


def test_broker_results_read_the_report_task_and_name_hosts_that_failed_before_it() -> None:
    from metalab.labctl import runner, users

    def event(kind: str, host: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
        return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}

    events = [
        event("runner_on_ok", "a", users.REPORT_TASK, {"msg": {"rc": 0, "stdout": '{"url": "u"}', "stderr": ""}}),
        event("runner_on_failed", "b", "One host only", {"msg": "2 hosts matched;\n choose one with --host"}),
        event("runner_on_unreachable", "c", "Run metalab-broker", {"msg": "ssh: refused"}),
    ]
    results, errors = users.broker_results(
        runner.replay(events, runner.ProgressModel(watch=frozenset({users.REPORT_TASK})))
    )
    assert results == {"a": users.BrokerResult("a", 0, '{"url": "u"}', "")}
    assert errors == ["b: 2 hosts matched; choose one with --host", "c: ssh: refused"]
