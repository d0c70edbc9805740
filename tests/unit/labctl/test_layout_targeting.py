"""The lab layout in labctl (issue 17): each user's home host read from the inventory, commands about one user acting
there once, and the placement of a new user (metalab.labctl.layout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.labctl import layout, session, users
from metalab.labctl.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
GiB = 1024**3
ROOT = Path(__file__).resolve().parents[3]

TWO_HOSTS = """\
all:
  hosts:
    ly1: {ansible_host: 10.0.0.1}
    ly2: {ansible_host: 10.0.0.2}
  children:
    gpu_hosts:
      hosts:
        ly2:
    lab_backup_target:
      hosts:
        bk1:
  vars:
    lab_users:
      - {name: alice, host: ly1}
      - {name: bob, host: ly2, gpu: true}
      - {name: carol}
"""


@pytest.fixture
def two_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "inventory" / "hosts.yml"
    path.parent.mkdir()
    path.write_text(TWO_HOSTS)
    monkeypatch.delenv("METALAB_INVENTORY", raising=False)
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    return path


def labctl(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def ansible_inventory(path: Path) -> dict[str, Any]:
    cmd = [str(Path(sys.executable).parent / "ansible-inventory"), "--list", "-i", str(path)]
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout)


def test_the_fast_reading_agrees_with_ansible_inventory(two_hosts: Path) -> None:
    fast, real = layout.read(str(two_hosts)), ansible_inventory(two_hosts)
    for data in (fast, real):
        assert layout.lab_hosts(data) == ["ly1", "ly2"]
        assert layout.gpu_hosts(data) == ["ly2"]
        assert [layout.home_host(data, u) for u in ("alice", "bob")] == ["ly1", "ly2"]
    assert layout.lab_users(fast) == layout.lab_users(real)


def test_home_host_names_what_is_missing(two_hosts: Path) -> None:
    data = layout.read(str(two_hosts))
    with pytest.raises(layout.LayoutError, match="carol has no home host: her lab_users entry needs host: "):
        layout.home_host(data, "carol")
    with pytest.raises(layout.LayoutError, match="zoe is not in lab_users"):
        layout.home_host(data, "zoe")


def test_a_single_host_lab_is_everyone_s_home_whatever_lab_users_says(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    lab1:\n  children:\n    lab_backup_target:\n      hosts:\n        bk:\n")
    data = layout.read(str(path))
    assert layout.lab_hosts(data) == ["lab1"]
    assert layout.home_host(data, "anyone") == "lab1"


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("all:!lab_backup_target", ["ly1", "ly2"]),
        ("all", ["bk1", "ly1", "ly2"]),
        ("gpu_hosts", ["ly2"]),
        ("ly*:&gpu_hosts", ["ly2"]),
        (["ly1", "bk1"], ["bk1", "ly1"]),
        ("all,!gpu_hosts,!bk1", ["ly1"]),
    ],
)
def test_lab_hosts_patterns(two_hosts: Path, pattern: Any, hosts: list[str]) -> None:
    assert layout.select(layout.read(str(two_hosts)), pattern) == hosts


def recorded_module(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(args: dict[str, Any], *, inventory: str | None, hosts: str) -> dict[str, session.HostResult]:
        calls.append((hosts, args))
        result: dict[str, Any] = {"changed": True, "session": {"kind": "cpu", "time_left_seconds": 60}, "token": "t"}
        return {hosts: session.HostResult(hosts, True, result)}

    monkeypatch.setattr(session, "run_module", fake)
    return calls


def test_session_start_stop_token_act_on_the_home_host_once(two_hosts: Path, monkeypatch) -> None:
    calls = recorded_module(monkeypatch)
    code, out = labctl("session", "start", "bob", "-i", str(two_hosts))
    assert code == 0, out
    assert calls == [("ly2", {"user": "bob", "gpu": False, "state": "started"})]
    assert "runtime for bob on ly2" in out
    calls.clear()
    assert labctl("session", "stop", "alice", "-i", str(two_hosts))[0] == 0
    assert labctl("session", "token", "alice", "-i", str(two_hosts))[0] == 0
    assert calls == [("ly1", {"user": "alice", "state": "stopped"}), ("ly1", {"user": "alice", "state": "token"})]


def test_session_start_of_a_user_without_home_host_starts_nothing(two_hosts: Path, monkeypatch) -> None:
    calls = recorded_module(monkeypatch)
    code, out = labctl("session", "start", "carol", "-i", str(two_hosts))
    assert code == 1 and "carol has no home host" in out
    assert calls == []
    # --host still chooses by hand.
    assert labctl("session", "start", "carol", "--host", "ly1", "-i", str(two_hosts))[0] == 0
    assert [c[0] for c in calls] == ["ly1"]


def test_passwd_and_enroll_act_on_the_home_host(two_hosts: Path, monkeypatch) -> None:
    calls: list[tuple[list[str], str]] = []

    def fake(args: list[str], *, inventory: str, hosts: str, **kwargs: Any) -> dict[str, users.BrokerResult]:
        calls.append((args, hosts))
        out = json.dumps({"user": "bob", "url": "https://x/enroll/abc", "expires": "later"})
        return {hosts: users.BrokerResult(hosts, 0, out)}

    monkeypatch.setattr(users, "run_broker", fake)
    result = CliRunner().invoke(cli, ["users", "passwd", "bob", "--stdin", "-i", str(two_hosts)], input="pw\n")
    assert result.exit_code == 0, result.output
    assert [c[1] for c in calls] == ["ly2"]
    assert labctl("users", "enroll", "alice", "-i", str(two_hosts))[0] == 0
    assert [c[1] for c in calls] == ["ly2", "ly1"]


# --- placement ------------------------------------------------------------------------------------------------


def test_place_prefers_the_most_headroom_and_breaks_ties_by_name() -> None:
    resolved = [
        {"name": "a", "host": "h1", "quota_bytes": 10 * GiB, "state": "present"},
        {"name": "b", "host": "h2", "quota_bytes": 10 * GiB, "state": "present"},
        {"name": "c", "host": "h3", "quota_bytes": 50 * GiB, "state": "absent"},  # absent: no longer counted
    ]
    sizes = {"h1": 100 * GiB, "h2": 100 * GiB, "h3": 100 * GiB}
    placed = layout.place("zoe", False, resolved, ["h2", "h1", "h3"], [], sizes)
    assert placed.host == "h3"
    assert placed.why == (
        "zoe -> h3: the most quota headroom among the hosts for a CPU user (every lab host): h3 100G of 100G, "
        "h1 90G of 100G, h2 90G of 100G free after quotas"
    )
    tie = layout.place("zoe", False, resolved[:2], ["h2", "h1"], [], sizes)
    assert tie.host == "h1" and tie.why.endswith("; a tie, broken by name")


def test_place_a_gpu_user_only_on_gpu_hosts_and_say_what_was_not_readable() -> None:
    sizes = {"cpu1": 900 * GiB, "gpu1": 100 * GiB, "gpu2": None}
    placed = layout.place("zoe", True, [], ["cpu1", "gpu1", "gpu2"], ["gpu1", "gpu2"], sizes)
    assert placed.host == "gpu1"
    assert "for a GPU user (hosts of gpu_hosts)" in placed.why
    assert placed.why.endswith("(gpu2: homes volume not readable, left out)")
    with pytest.raises(layout.LayoutError, match="no lab host is in the group gpu_hosts"):
        layout.place("zoe", True, [], ["cpu1"], [], sizes)
    with pytest.raises(layout.LayoutError, match="cannot read the homes volume of gpu2"):
        layout.place("zoe", True, [], ["cpu1", "gpu2"], ["gpu2"], sizes)


def test_users_add_places_and_writes_the_host_keeping_comments(two_hosts: Path, homes_volumes) -> None:
    two_hosts.write_text(TWO_HOSTS.replace("      - {name: carol}\n", "      # the last one\n"))
    homes_volumes.update({"ly1": 100 * GiB, "ly2": 40 * GiB})
    code, out = labctl("users", "add", "dora", "--quota", "5G", "-i", str(two_hosts))
    assert code == 0, out
    # ly1: 100G - 15G (alice) = 85G; ly2: 40G - 15G (bob) = 25G.
    assert "placed dora -> ly1: the most quota headroom among the hosts for a CPU user (every lab host): " in out
    assert "ly1 85G of 100G, ly2 25G of 40G free after quotas" in out
    text = two_hosts.read_text()
    assert "{name: dora, quota: 5G, gpu: false, host: ly1}" in text and "# the last one" in text
    code, out = labctl("users", "add", "eve", "--gpu", "-i", str(two_hosts))
    assert code == 0 and "placed eve -> ly2" in out


def test_users_add_refuses_a_host_that_cannot_hold_her(two_hosts: Path) -> None:
    before = two_hosts.read_text()
    code, out = labctl("users", "add", "dora", "--host", "ly3", "-i", str(two_hosts))
    assert code == 1 and "dora: host 'ly3' is not a lab host (lab hosts: ly1, ly2); nothing written" in out
    code, out = labctl("users", "add", "dora", "--gpu", "--host", "ly1", "-i", str(two_hosts))
    assert code == 1 and "dora: a GPU user, but 'ly1' is not in the group gpu_hosts (ly2); nothing written" in out
    assert two_hosts.read_text() == before
    # The legitimate choice by hand.
    code, out = labctl("users", "add", "dora", "--gpu", "--host", "ly2", "-i", str(two_hosts))
    assert code == 0 and "placed" not in out
    assert "{name: dora, gpu: true, host: ly2}" in two_hosts.read_text()


def test_users_add_in_a_single_host_lab_writes_no_host(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    lab1:\n  vars:\n    lab_users:\n      - name: alice\n")
    monkeypatch.setattr(layout, "SIZES", lambda *a: pytest.fail("a single-host lab reads no volume"))
    code, out = labctl("users", "add", "bob", "-i", str(path))
    assert code == 0 and "placed" not in out
    assert path.read_text().endswith("      - name: bob\n        gpu: false\n")


def test_users_set_gpu_needs_a_gpu_home_host(two_hosts: Path) -> None:
    before = two_hosts.read_text()
    code, out = labctl("users", "set", "alice", "--gpu", "-i", str(two_hosts))
    assert code == 1 and "alice's home host ly1 has no GPUs" in out and "labctl users move alice --to HOST" in out
    assert two_hosts.read_text() == before
    code, out = labctl("users", "set", "bob", "--no-gpu", "-i", str(two_hosts))
    assert code == 0, out


def test_users_add_fixture_copy_is_untouched_by_a_bad_roster(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "inventory", tmp_path / "inventory")
    roster = tmp_path / "r.csv"
    roster.write_text("name,quota,gpu,host\nzed,1G,true,lab1.example.org\n")
    before = (tmp_path / "inventory" / "hosts.yml").read_text()
    code, out = labctl("users", "add", "--csv", str(roster), "-i", str(tmp_path / "inventory" / "hosts.yml"))
    assert code == 1 and "zed: a GPU user, but 'lab1.example.org' is not in the group gpu_hosts" in out
    assert (tmp_path / "inventory" / "hosts.yml").read_text() == before
