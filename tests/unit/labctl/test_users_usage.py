"""labctl users set (in place, comments kept, bad input changes nothing) and users list --usage (the usage file and
guard hours of each lab host, merged with the inventory)."""

from __future__ import annotations

import csv
import difflib
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from metalab.labctl import userusage as usage
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
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def labctl(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


GiB = 1024**3


def test_set_changes_only_that_entry(inventory: Path) -> None:
    before = inventory.read_text()
    code, out = labctl("users", "set", "alice", "--quota", "40G", "--no-gpu", "-i", str(inventory))
    assert code == 0, out
    assert "alice: quota 40G, gpu false" in out
    removed, added = changes(before, inventory.read_text())
    assert removed == ['        quota: "30G"', "        gpu: true"]
    assert added == ['        quota: "40G"', "        gpu: false"]  # its quoting, its comments, the order kept
    assert "# PI" in inventory.read_text() and "# Students" in inventory.read_text()

    before = inventory.read_text()
    code, out = labctl("users", "set", "carol", "--gpu", "-i", str(inventory))
    assert code == 0, out
    carol = "      - {name: carol, quota: '10G', gpu: true, host: gpu1.example.org}"
    assert changes(before, inventory.read_text())[1] == [carol]
    assert carol in inventory.read_text()
    code, out = labctl("users", "set", "carol", "--gpu", "-i", str(inventory))
    assert code == 0 and "already has that" in out


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["bob", "--quota", "15GG"], "lab_users[1] (name 'bob'): invalid quota", 1),
        (["nobody", "--quota", "1G"], "no lab user named 'nobody'", 1),
        (["bob"], "nothing to change", 2),
    ],
)
def test_set_bad_input_changes_nothing(inventory: Path, args: list[str], message: str, code: int) -> None:
    before = inventory.read_bytes()
    got, out = labctl("users", "set", *args, "-i", str(inventory))
    assert got == code and message in out, out
    assert inventory.read_bytes() == before
    assert sorted(p.name for p in inventory.parent.iterdir()) == ["group_vars", "hosts.yml"]


HOURS = {
    "since": "2026-11-23T15:00:00Z",
    "until": "2026-11-30T15:00:00Z",
    "usage": [
        {"user": "alice", "kind": "cpu", "hours": 1.5, "seconds": 5400, "sessions": 2},
        {"user": "alice", "kind": "gpu", "hours": 0.25, "seconds": 900, "sessions": 1},
    ],
}
USAGE_FILE = {
    "alice": {"used_bytes": 312 * 1024**2, "limit_bytes": 30 * GiB, "measured_at": "2026-11-30T15:00:00Z",
              "source": "walk"},
    "bob": {"used_bytes": 4096, "limit_bytes": 0, "measured_at": "2026-11-30T15:00:00Z", "source": "walk"},
}  # fmt: skip


def _report(**over):
    msg = {"usage": json.dumps(USAGE_FILE), "usage_error": "", "hours_rc": "0", "hours": json.dumps(HOURS),
           "hours_error": ""}  # fmt: skip
    msg.update(over)
    return msg


def test_parse_report_and_its_warnings() -> None:
    users, warnings = usage.parse_report("lab1", _report())
    assert warnings == []
    assert users["alice"] == {
        "host": "lab1", "home_used_bytes": 312 * 1024**2, "home_limit_bytes": 30 * GiB,
        "measured_at": "2026-11-30T15:00:00Z", "source": "walk", "cpu_hours_7d": 1.5, "gpu_hours_7d": 0.25,
    }  # fmt: skip
    assert users["bob"]["cpu_hours_7d"] == 0.0
    users, warnings = usage.parse_report("lab1", _report(usage="", usage_error="file not found", hours_rc="1",
                                                         hours_error="metalab-guard: no config"))  # fmt: skip
    assert warnings == [
        "lab1: no usage file yet (file not found)",
        "lab1: metalab-guard usage failed: metalab-guard: no config",
    ]
    assert users == {}


def test_list_usage_formats(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def fetch(inv: str, hosts: str | None) -> dict:
        asked.append((inv, hosts))
        return {"lab1.example.org": usage.parse_report("lab1.example.org", _report())[0]}

    monkeypatch.setattr(usage, "fetch", fetch)
    code, out = labctl("users", "list", "--usage", "--json", "-i", str(inventory))
    assert code == 0, out
    rows = json.loads(out)
    assert asked == [(str(inventory), None)]
    assert rows[0] == {
        "name": "alice", "quota": "30G", "gpu": True, "state": "present", "host": "lab1.example.org",
        "home_used_bytes": 312 * 1024**2, "home_limit_bytes": 30 * GiB, "measured_at": "2026-11-30T15:00:00Z",
        "source": "walk", "cpu_hours_7d": 1.5, "gpu_hours_7d": 0.25,
    }  # fmt: skip
    assert rows[2]["name"] == "carol" and rows[2]["home_used_bytes"] is None  # no host knows her yet
    code, out = labctl("users", "list", "--usage", "--csv", "-i", str(inventory))
    assert list(csv.DictReader(io.StringIO(out)))[1]["home_used_bytes"] == "4096"
    code, out = labctl("users", "list", "--usage", "-i", str(inventory))
    assert code == 0, out
    assert "312M / 30G" in out and "1.50 cpu, 0.25 gpu" in out and "4K (no quota)" in out
