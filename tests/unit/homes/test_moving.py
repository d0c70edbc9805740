"""metalab-homes ledger-export/-import/-forget (a user's guard ledger rows follow her, once) and prepare-target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalab.host.guard.ledger import Ledger
from metalab.host.homes import cli, moving
from metalab.host.homes.errors import HomesError


def ledger_with_rows(path: Path, user: str, hours: list[float], open_row: bool = False) -> None:
    ledger = Ledger(str(path))
    now = 1_800_000_000.0
    for i, h in enumerate(hours):
        row = ledger.insert_starting(user, "lab1", "cpu", None, f"c-{user}-{i}", now - 10_000 * (i + 1), "test")
        ledger.mark_running(row.id, row.started + 1, "test")
        ledger.mark_stopping(row.id, "user", row.started + h * 3600, "test")
        ledger.close_row(row.id, "user", row.started + h * 3600, row.started + h * 3600, "test")
    if open_row:
        ledger.insert_starting(user, "lab1", "cpu", None, f"c-{user}-open", now, "test")
    ledger.close()


def hours(path: Path, user: str) -> float:
    ledger = Ledger(str(path))
    try:
        rows = ledger.sessions_since(0, [user])
        return round(sum((r.ended or 0) - r.started for r in rows) / 3600, 3)
    finally:
        ledger.close()


def test_rows_move_once_and_leave_the_old_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, rows = tmp_path / "old.sqlite", tmp_path / "new.sqlite", tmp_path / "alice.ledger.json"
    ledger_with_rows(old, "alice", [1.0, 0.5])
    ledger_with_rows(old, "bob", [2.0])
    ledger_with_rows(new, "carol", [3.0])
    argv = ["ledger-export", "alice", "--ledger", str(old), "--to", str(rows), "--source", "lab1", "--move-id", "M1"]
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtimes"] == 2
    for expected in (True, False):  # the second import is a no-op
        assert cli.main(["ledger-import", str(rows), "--ledger", str(new), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["imported"] is expected and out["user_rows"] == 2
    assert hours(new, "alice") == 1.5 and hours(new, "carol") == 3.0
    for removed in (2, 0):  # forgetting twice removes once
        assert cli.main(["ledger-forget", str(rows), "--ledger", str(old), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["removed"], out["user_rows"]) == (removed, 0)
    assert hours(old, "alice") == 0 and hours(old, "bob") == 2.0
    assert rows.exists()  # kept beside the archive


def test_export_refused_while_a_runtime_is_open(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    ledger_with_rows(old, "alice", [1.0], open_row=True)
    with pytest.raises(HomesError, match="open runtime"):
        moving.ledger_export(str(old), "alice", "lab1", "M1")


def test_prepare_target_empties_a_fresh_home_only(tmp_path: Path) -> None:
    skel = tmp_path / "skel"
    skel.mkdir()
    (skel / ".bashrc").write_text("# bashrc\n")
    home = tmp_path / "homes" / "alice"
    assert moving.prepare_target(str(home), str(skel))["state"] == "absent"
    home.mkdir(parents=True)
    assert moving.prepare_target(str(home), str(skel))["state"] == "empty"
    (home / ".bashrc").write_text("# bashrc\n")
    assert moving.prepare_target(str(home), str(skel))["state"] == "emptied"
    assert list(home.iterdir()) == []
    (home / ".bashrc").write_text("# bashrc, edited\n")
    (home / "thesis.tex").write_text("x")
    with pytest.raises(HomesError, match="not copies of") as refused:
        moving.prepare_target(str(home), str(skel))
    assert sorted(refused.value.details) == [".bashrc", "thesis.tex"]
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "thesis.tex"]
