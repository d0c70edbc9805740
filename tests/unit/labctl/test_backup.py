"""labctl backup and labctl users restore: what the hosts' metalab-backup answers becomes (rows, exit codes,
the host chosen for a restore), with the playbook run replaced by recorded answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.labctl import backup, runner
from metalab.labctl.cli import cli

NOW = 1_800_000_000.0
GOOD = {
    "host": "lab1",
    "repository": "sftp:metalab-backup@backup1:/lab1",
    "last_snapshot": {"id": "4f2a9c1e77", "short_id": "4f2a9c1e", "time": "2027-01-15T07:00Z", "size_bytes": 5 << 20},
    "age_s": 1800,
    "last_success": NOW - 1800,
    "last_check": {"time": NOW - 7200, "ok": True},
    "last_error": None,
    "stale": False,
    "max_age_s": 93600,
}  # fmt: skip


def answer(host: str, rc: int = 0, data: Any = None, stderr: str = "", configured: bool = True) -> backup.HostAnswer:
    return backup.HostAnswer(host, configured, rc, json.dumps(data) if data is not None else "", stderr)


def event(kind: str, host: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_answers_read_the_report_task_and_hosts_that_failed_before_it() -> None:
    events = [
        event("runner_on_ok", "a", backup.REPORT_TASK, {"msg": {"configured": True, "rc": "0", "stdout": "{}"}}),
        event("runner_on_ok", "t", backup.REPORT_TASK, {"msg": {"configured": False, "rc": -1, "stdout": ""}}),
        event("runner_on_unreachable", "c", "Look for the backup configuration", {"msg": "ssh: refused"}),
    ]
    answers = backup.answers_from(runner.replay(events, runner.ProgressModel(watch=frozenset({backup.REPORT_TASK}))))
    assert answers["a"] == backup.HostAnswer("a", True, 0, "{}", "")
    assert not answers["t"].configured
    assert answers["c"].problem == "unreachable: ssh: refused"


def test_status_row_of_a_good_host() -> None:
    row = backup.status_row(answer("lab1", data=GOOD), NOW)
    assert row["state"] == "ok"
    assert (row["snapshot"], row["age"], row["size"], row["stale"], row["error"]) == (
        "4f2a9c1e",
        "30m00s",
        "5M",
        False,
        "",
    )
    assert row["last_check"] == "ok 2h00m ago"


def test_status_row_names_the_error_of_the_last_run() -> None:
    error = {"time": NOW - 60, "message": "wrong password: the repository\n cannot be opened"}
    row = backup.status_row(answer("lab1", data={**GOOD, "last_error": error}), NOW)
    assert row["state"] == "error"
    assert row["error"] == "wrong password: the repository cannot be opened"
    assert row["snapshot"] == "4f2a9c1e", "the last good snapshot is still shown"


def test_status_row_stale_and_never() -> None:
    stale = backup.status_row(answer("lab1", data={**GOOD, "age_s": 200000, "stale": True}), NOW)
    assert (stale["state"], stale["age"]) == ("stale", "2d7h")
    never = backup.status_row(answer("lab1", data={**GOOD, "last_snapshot": None, "age_s": None, "stale": True}), NOW)
    assert (never["state"], never["age"], never["snapshot"]) == ("stale", "never", None)


def test_status_row_without_backups_or_answer() -> None:
    assert backup.status_row(answer("t", configured=False), NOW)["state"] == "not configured"
    broken = backup.status_row(answer("lab1", rc=1, stderr="Traceback...\nPermissionError: /etc/metalab"), NOW)
    assert (broken["state"], broken["error"]) == ("error", "PermissionError: /etc/metalab")
    gone = backup.status_row(backup.HostAnswer("lab2", True, -1, problem="unreachable: ssh: timeout"), NOW)
    assert (gone["state"], gone["error"]) == ("unreachable", "unreachable: ssh: timeout")


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Replace the playbook run: ``answers[args[0]]`` is what the hosts say; ``calls`` records (args, hosts)."""
    calls: list[tuple[list[str], str]] = []
    answers: dict[str, dict[str, backup.HostAnswer]] = {}

    def fake(args: list[str], *, inventory: str, hosts: str) -> dict[str, backup.HostAnswer]:
        calls.append((args, hosts))
        found = answers[args[0]]
        return {h: a for h, a in found.items() if hosts in (backup.LAB_HOSTS, h)}

    monkeypatch.setattr(backup, "run_backup", fake)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    lab1:\n    lab2:\n")
    monkeypatch.setenv("METALAB_INVENTORY", str(inventory))
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    return answers, calls


def labctl(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_status_json_and_exit_code(hosts) -> None:
    answers, calls = hosts
    error = {"time": NOW, "message": "repository unreachable: ssh: connect to host 10.214.0.9 port 22: No route"}
    answers["status"] = {
        "lab1": answer("lab1", data=GOOD),
        "lab2": answer("lab2", rc=0, data={**GOOD, "last_error": error}),
    }
    result = labctl("backup", "status", "--json")
    assert result.exit_code == 2, result.output
    rows = {r["host"]: r for r in json.loads(result.output)}
    assert rows["lab1"]["state"] == "ok" and rows["lab2"]["state"] == "error"
    assert "repository unreachable" in rows["lab2"]["error"]
    assert calls == [(["status"], "all:!lab_backup_target")]
    answers["status"].pop("lab2")
    assert labctl("backup", "status").exit_code == 0


def test_run_reports_busy_with_its_exit_code(hosts) -> None:
    answers, calls = hosts
    busy = answer("lab1", rc=75, data={"error": "another backup is running on this host"})
    answers["run"] = {
        "lab1": busy,
        "lab2": answer("lab2", data={"snapshot": {"id": "77aa00bb99", "size_bytes": 3 << 20}, "total_seconds": 4.26}),
    }
    result = labctl("backup", "run")
    assert result.exit_code == 75, "the one host that did not back up was busy"
    assert "lab1: another backup is running on this host" in result.output
    assert "lab2: backed up, snapshot 77aa00bb, 3M in 4.3s" in result.output
    answers["run"]["lab2"] = answer("lab2", rc=1, data={"error": "repository unreachable"})
    result = labctl("backup", "run")
    assert result.exit_code == 1, "busy and failed: a failure overall"
    assert "lab2: repository unreachable" in result.output


def test_users_restore_finds_the_host_that_has_her_and_prints_the_folder(hosts) -> None:
    answers, calls = hosts
    answers["snapshots"] = {
        "lab1": answer("lab1", data=[]),
        "lab2": answer("lab2", data=[{"id": "ab", "short_id": "ab"}]),
    }
    target = "/srv/metalab/homes/lab-alice/restored/2027-01-15T070000-4f2a9c1e"
    answers["restore"] = {
        "lab2": answer("lab2", data={"target": target, "files": 3, "bytes": 2048, "snapshot": "4f2a9c1e77"})
    }
    result = labctl("users", "restore", "alice", "--path", "notebooks", "--before", "2027-01-16T00:00:00")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == target
    assert calls[-1] == (["restore", "alice", "--before", "2027-01-16T00:00:00", "--path", "notebooks"], "lab2")


def test_users_restore_refused_passes_the_refusal_on(hosts) -> None:
    answers, _ = hosts
    answers["snapshots"] = {"lab1": answer("lab1", data={"user": "alice", "snapshots": [{"id": "ab"}]})}
    refused = answer("lab1", rc=3, data={"error": "refused: 40M to restore, 12M free in alice's quota"})
    answers["restore"] = {"lab1": refused}
    result = labctl("users", "restore", "alice")
    assert result.exit_code == 3
    assert "refused: 40M to restore, 12M free in alice's quota" in result.output


def test_users_restore_without_backups_of_her_or_with_two_hosts(hosts) -> None:
    answers, _ = hosts
    answers["snapshots"] = {
        "lab1": answer("lab1", data=[]),
        "lab2": answer("lab2", rc=2, data={"error": "unknown user zed"}),
    }
    result = labctl("users", "restore", "zed")
    assert result.exit_code == 1 and "no backup of zed on any lab host (lab2: unknown user zed)" in result.output
    answers["snapshots"] = {h: answer(h, data={"user": "alice", "snapshots": [{"id": "x"}]}) for h in ("lab1", "lab2")}
    result = labctl("users", "restore", "alice")
    assert result.exit_code == 2 and "backups of alice are on lab1, lab2: choose one with --host" in result.output
    result = labctl("users", "restore", "alice", "--snapshot", "ab", "--before", "2027-01-01")
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_restore_host_needs_one_host(hosts) -> None:
    answers, calls = hosts
    answers["restore-host"] = {
        "lab1": answer("lab1", data={"homes": ["lab-alice", "lab-bob"], "snapshot": "4f2a9c1e77"})
    }
    result = labctl("backup", "restore-host", "--host", "lab1", "--snapshot", "4f2a")
    assert result.exit_code == 0, result.output
    assert calls[-1] == (["restore-host", "--snapshot", "4f2a"], "lab1")
    assert "lab1: restored lab-alice, lab-bob from snapshot 4f2a9c1e" in result.output
    assert labctl("backup", "restore-host").exit_code == 2
