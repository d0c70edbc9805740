"""Failures of the repository give a clear message, change nothing in the homes and show in status and metrics."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess

import pytest

from metalab.host.backup import cli, state
from metalab.host.backup.config import load_config
from metalab.host.backup.restic import Restic, sftp_command

from .conftest import AS_ROOT, Lab, tree


def test_wrong_password_is_named_recorded_and_cleared_by_the_next_good_run(lab: Lab) -> None:
    good = lab.password.read_text()
    lab.password.write_text("not the password\n")
    before = tree(lab.homes)
    code, out = lab.cli("run")
    assert code == 1 and out["code"] == "failure" and "wrong repository password" in out["error"]
    code, status = lab.cli("status")
    assert "wrong repository password" in status["last_error"]["message"] and status["stale"] is True
    code, out = lab.cli("restore", "alice")
    assert code == 1 and "wrong repository password" in out["error"]
    assert tree(lab.homes) == before
    metrics = (lab.root / "metrics").exists()
    assert metrics is False  # no textfile directory: nothing written, no failure

    lab.password.write_text(good)
    assert lab.cli("run")[0] == 0
    status = lab.cli("status")[1]
    assert status["last_error"] is None and status["stale"] is False


def test_missing_repository_is_named_and_shown_in_status_and_metrics(lab: Lab) -> None:
    (lab.root / "metrics").mkdir()
    lab.set_config(repository=str(lab.root / "no-such-repo"))
    code, out = lab.cli("run")
    assert code == 1 and "does not exist" in out["error"] and "no-such-repo" in out["error"]
    assert "does not exist" in lab.cli("status")[1]["last_error"]["message"]
    prom = (lab.root / "metrics" / "metalab-backup.prom").read_text()
    assert 'metalab_backup_failing{host="lab1"} 1' in prom and 'metalab_backup_stale{host="lab1"} 1' in prom

    code, out = lab.cli("init")  # what the backup role runs: makes a missing repository, once
    assert code == 0 and out["initialized"] is True
    lab.set_config(repository=str(lab.repo))
    assert lab.cli("init") == (0, {"initialized": False, "repository": str(lab.repo)})
    assert lab.cli("run")[0] == 0
    assert lab.cli("check")[0] == 0
    prom = (lab.root / "metrics" / "metalab-backup.prom").read_text()
    for line in [
        'metalab_backup_failing{host="lab1"} 0',
        'metalab_backup_stale{host="lab1"} 0',
        'metalab_backup_last_check_ok{host="lab1"} 1',
        "metalab_backup_last_success_timestamp_seconds{",
    ]:
        assert line in prom, prom  # fmt: skip
    code, status = lab.cli("status")
    assert status["last_check"]["ok"] is True
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["status", "--prometheus", "--config", str(lab.config)]) == 0
    assert 'metalab_backup_last_check_ok{host="lab1"} 1' in out.getvalue()
    assert 'metalab_backup_last_snapshot_size_bytes{host="lab1"} ' in out.getvalue()


def test_a_second_run_while_one_runs_is_busy_then_runs(lab: Lab) -> None:
    cfg = load_config(str(lab.config))
    with state.run_lock(cfg):
        code, out = lab.cli("run")
        assert code == 75 and out["code"] == "busy" and "another backup is running on this host" in out["error"]
        assert lab.cli("restore-host")[0] == 75
    assert lab.cli("run")[0] == 0


def test_restic_never_gets_the_password_on_its_command_line_and_sftp_pins_the_host_key(lab: Lab) -> None:
    lab.set_config(repository="sftp:metalab-lab1@backup1:/srv/restic/lab1")
    cfg = load_config(str(lab.config))
    restic = Restic(cfg)
    argv = restic.argv(["snapshots"])
    password = lab.password.read_text().strip()
    assert all(password not in a for a in argv)
    env = restic.env()
    assert env["RESTIC_PASSWORD_FILE"] == str(lab.password) and "RESTIC_PASSWORD" not in env
    ssh = shlex.split(sftp_command(cfg) or "")
    assert ssh[:3] == ["ssh", "-i", str(lab.root / "etc" / "id_ed25519")]
    assert f"UserKnownHostsFile={lab.root / 'etc' / 'known_hosts'}" in ssh and "StrictHostKeyChecking=yes" in ssh
    assert ssh[-3:] == ["metalab-lab1@backup1", "-s", "sftp"]
    # an unreachable backup host: a clear message, recorded
    code, out = lab.cli("run")
    assert code == 1 and "unreachable" in out["error"] and "backup1" in out["error"], out
    assert "unreachable" in lab.cli("status")[1]["last_error"]["message"]


def test_env_file_reaches_restic(lab: Lab) -> None:
    (lab.root / "etc" / "env").write_text("# S3 credentials\nAWS_ACCESS_KEY_ID=AKIA123\nexport B='two words'\n")
    env = Restic(load_config(str(lab.config))).env()
    assert env["AWS_ACCESS_KEY_ID"] == "AKIA123" and env["B"] == "two words"


def test_a_full_target_is_named_shown_in_status_and_changes_nothing(lab: Lab) -> None:
    # A 1 MiB tmpfs holds the empty repository but not alice's 1.2 MB of random data: restic hits ENOSPC.
    if not AS_ROOT:
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":  # make test: a missing requirement fails
            pytest.fail("a full backup target is made with a tmpfs mount, which needs root")
        pytest.skip("a full backup target is made with a tmpfs mount, which needs root")
    small = lab.root / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        shutil.copytree(lab.repo, small / "repo")
        lab.set_config(repository=str(small / "repo"))
        before = tree(lab.homes)
        code, out = lab.cli("run")
        assert code == 1 and out["code"] == "failure" and "is full" in out["error"], out
        assert "is full" in lab.cli("status")[1]["last_error"]["message"]
        assert tree(lab.homes) == before
    finally:
        subprocess.run(["umount", str(small)], check=False)
    # The same backup to a repository with room works, through the same command.
    lab.set_config(repository=str(lab.repo))
    assert lab.cli("run")[0] == 0
    assert lab.cli("status")[1]["last_error"] is None
