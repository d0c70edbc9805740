"""labctl doctor: judging probe reports and controller facts (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metalab.labctl import doctor, runner

FIXTURES = Path(__file__).parent / "fixtures"
# Recorded from playbooks/doctor.yml on a bare Debian 12 host (nothing of metalab installed).
BARE = json.loads((FIXTURES / "doctor_report_debian12_bare.json").read_text())
NOW = 1_800_000_000
HEALTHY: dict[str, Any] = {
    **BARE,
    "distribution": "Ubuntu",
    "distribution_major_version": "24",
    "now": NOW,
    "homes_exists": True,
    "homes_mount": {
        "target": "/srv/metalab/homes",
        "source": "/dev/nvme1n1",
        "fstype": "xfs",
        "options": "rw,usrquota",
    },
    "podman_installed": True,
    "podman_rc": 0,
    "image_rc": 0,
    "frontdoor_installed": True,
    "frontdoor_status": 302,
    "guard_stamp_mtime": NOW - 40,
    "guard_cron_present": True,
    "guard_installed": True,
    "guard_config_mtime": NOW - 3600,
    "backup_configured": True,
    "backup_rc": 0,
    "backup_stdout": json.dumps(
        {
            "host": "h",
            "repository": "sftp:metalab-backup@backup1:/h",
            "last_snapshot": {"id": "4f2a9c1e77", "short_id": "4f2a9c1e", "time": "2027-01-15T07:00:00Z",
                              "size_bytes": 3 * 2**30},
            "age_s": 3 * 3600,
            "last_success": NOW - 3 * 3600,
            "last_check": {"time": NOW - 86400, "ok": True},
            "last_error": None,
            "stale": False,
            "max_age_s": 26 * 3600,
        }
    ),
}  # fmt: skip


def verdicts(findings: list[doctor.Finding]) -> dict[str, str]:
    return {f.check: f.status for f in findings}


def test_bare_host_is_not_applicable_rather_than_failing() -> None:
    found = verdicts(doctor.evaluate_host("h", BARE))
    assert found == {
        "reachable": "ok",
        "supported OS": "ok",
        "homes volume": "n/a",
        "podman": "n/a",
        "runtime image": "n/a",
        "front door :443": "n/a",
        "guard cron": "n/a",
        "guard ran recently": "n/a",
        "backup": "n/a",
    }
    assert doctor.exit_code(doctor.evaluate_host("h", BARE)) == 0


def test_healthy_host() -> None:
    findings = doctor.evaluate_host("h", HEALTHY)
    assert set(verdicts(findings).values()) == {"ok"}
    assert doctor.exit_code(findings) == 0


@pytest.mark.parametrize(
    ("change", "check", "status", "words"),
    [
        ({"distribution": "Amazon", "distribution_major_version": "2"}, "supported OS", "fail", "Amazon 2"),
        ({"homes_mount": {}}, "homes volume", "fail", "nothing is mounted"),
        (
            {"homes_mount": {"source": "/dev/nvme1n1", "fstype": "xfs", "options": "rw,noatime"}},
            "homes volume",
            "fail",
            "no quota options",
        ),
        ({"homes_device": "none"}, "homes volume", "n/a", "lab_homes_device is none"),
        ({"podman_rc": 125, "podman_error": "Error: cannot open storage"}, "podman", "fail", "cannot open storage"),
        ({"image_rc": 1}, "runtime image", "fail", "localhost/metalab/runtime:0.1.0 is missing"),
        ({"frontdoor_status": -1, "frontdoor_msg": "Connection refused"}, "front door :443", "fail", "refused"),
        ({"frontdoor_status": 500}, "front door :443", "fail", "HTTP 500"),
        ({"frontdoor_status": 503}, "front door :443", "warn", "portal behind it is not answering"),
        ({"frontdoor_port": 8443, "frontdoor_status": 500}, "front door :8443", "fail", "HTTP 500"),
        ({"guard_stamp_mtime": NOW - 600}, "guard ran recently", "fail", "600s ago"),
        ({"guard_stamp_mtime": 0}, "guard ran recently", "fail", "never run"),
        ({"guard_stamp_mtime": 0, "guard_config_mtime": NOW - 30}, "guard ran recently", "warn", "no run yet"),
        ({"guard_cron_present": False}, "guard cron", "fail", "missing"),
        ({"guard_skip_mtime": NOW - 20, "guard_stamp_mtime": NOW - 80}, "guard lock", "fail", "enforced nothing"),
        ({"guard_skip_mtime": NOW - 200, "guard_stamp_mtime": NOW - 20}, "guard lock", "ok", "later runs succeeded"),
    ],
)
def test_problems(change: dict[str, Any], check: str, status: str, words: str) -> None:
    findings = doctor.evaluate_host("h", {**HEALTHY, **change})
    finding = next(f for f in findings if f.check == check)
    assert (finding.status, words in finding.detail) == (status, True), finding
    if status == "fail":
        assert finding.action
        assert doctor.exit_code(findings) == 2


def test_unreachable_and_missing_report() -> None:
    [f] = doctor.evaluate_host("h", None, "Connection refused", unreachable=True)
    assert (f.check, f.status, f.detail) == ("reachable", "fail", "Connection refused")
    [f] = doctor.evaluate_host("h", None, "Gather facts: sudo: a password is required")
    assert f.status == "fail" and "sudo" in f.detail


def test_reports_from_the_report_task_only() -> None:
    events = [
        {"event": "runner_on_ok", "event_data": {"host": "a", "task": doctor.REPORT_TASK, "res": {"msg": BARE}}},
        {"event": "runner_on_ok", "event_data": {"host": "b", "task": "Look for podman", "res": {"msg": BARE}}},
        {"event": "runner_on_failed", "event_data": {"host": "c", "task": doctor.REPORT_TASK, "res": {"msg": "x"}}},
    ]
    model = runner.replay(events, runner.ProgressModel(watch=frozenset({doctor.REPORT_TASK})))
    assert doctor.reports_from(model) == {"a": BARE}


def controller(**kw: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "ansible_version": "2.19.14",
        "ansible_pinned": "2.19.14",
        "python_version": (3, 11, 7),
        "inventory": {"_meta": {"hostvars": {"a": {"ansible_ssh_private_key_file": "~/.ssh/lab"}, "b": {}}}},
        "inventory_error": "",
        "users_errors": [],
        "readable": lambda path: True,
    }
    args.update(kw)
    return {f"{f.check}": f.status for f in doctor.evaluate_controller(**args)}


def test_controller_checks() -> None:
    assert controller() == {
        "ansible-core": "ok",
        "python": "ok",
        "inventory parses": "ok",
        "lab_users valid": "ok",
        "ssh key readable": "ok",
    }
    assert controller(ansible_version="2.18.1")["ansible-core"] == "warn"
    assert controller(python_version=(3, 10, 2))["python"] == "fail"
    assert controller(readable=lambda path: False)["ssh key readable"] == "fail"
    assert controller(users_errors=["lab_users[0]: bad"])["lab_users valid"] == "fail"
    broken = controller(inventory=None, inventory_error="Unable to parse hosts.yml")
    assert broken["inventory parses"] == "fail" and "ssh key readable" not in broken


def test_users_errors_from_inventory_data() -> None:
    data = {"_meta": {"hostvars": {"a": {"lab_users": [{"name": "ok"}, {"name": "x", "quota": "15GG"}]}}}}
    [error] = doctor.users_errors_from(data)
    assert "'x'" in error and "quota" in error


def _backup(**status: Any) -> dict[str, Any]:
    """HEALTHY with its metalab-backup status changed by ``status``."""
    return {**HEALTHY, "backup_stdout": json.dumps({**json.loads(HEALTHY["backup_stdout"]), **status})}


def _backup_finding(report: dict[str, Any]) -> doctor.Finding:
    return next(f for f in doctor.evaluate_host("h", report) if f.check == "backup")


def test_backup_fresh_is_ok_with_its_snapshot() -> None:
    finding = _backup_finding(HEALTHY)
    assert finding.status == "ok"
    assert "4f2a9c1e" in finding.detail and "3h00m" in finding.detail and "3G" in finding.detail


def test_backup_stale_fails() -> None:
    finding = _backup_finding(_backup(age_s=30 * 3600, stale=True))
    assert finding.status == "fail"
    assert "stale: last good backup 1d6h ago" in finding.detail
    assert "labctl backup run" in finding.action
    assert doctor.exit_code(doctor.evaluate_host("h", _backup(age_s=30 * 3600, stale=True))) == 2


def test_backup_never_run_is_stale() -> None:
    finding = _backup_finding(_backup(last_snapshot=None, age_s=None, last_success=None, stale=True))
    assert (finding.status, finding.detail) == ("fail", "stale: no backup yet")


def test_backup_last_run_failed_names_the_error() -> None:
    error = {"time": NOW - 60, "message": "wrong password: the repository cannot be opened"}
    finding = _backup_finding(_backup(last_error=error))
    assert finding.status == "fail"
    assert finding.detail == "the last backup failed: wrong password: the repository cannot be opened"


def test_backup_error_followed_by_a_success_is_history() -> None:
    error = {"time": NOW - 86400, "message": "repository unreachable"}
    assert _backup_finding(_backup(last_error=error)).status == "ok"


def test_backup_status_that_cannot_be_read_fails_with_its_message() -> None:
    report = {**HEALTHY, "backup_rc": 1, "backup_stdout": "", "backup_stderr": "metalab-backup: bad config\n"}
    finding = _backup_finding(report)
    assert (finding.status, finding.detail) == ("fail", "the last backup failed: metalab-backup: bad config")
