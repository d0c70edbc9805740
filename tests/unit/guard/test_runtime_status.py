"""The status file the guard writes for her JupyterLab (metalab-status.json in her socket directory, issue 19)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from metalab.host.guard import runtime_status
from metalab.host.guard.policy import format_iso

from .conftest import T0, H

M = 60


@pytest.fixture(autouse=True)
def usage_file(tmp_path):
    """The usage file lives in the test's directory (absent until a test writes it)."""
    path = tmp_path / "usage.json"  # the guard config's usage.file (conftest.base_config)
    return path


def status_path(env, user="alice"):
    return env.tmp / "sockets" / user / runtime_status.STATUS_FILE


def read_status(env, user="alice"):
    return json.loads(status_path(env, user).read_text())


def test_start_writes_every_describe_key_and_no_home_without_a_usage_file(env, lab):
    info = lab.start("alice", "cpu", T0)
    status = read_status(env)
    assert {k: status[k] for k in info} == info  # every _describe key, same values
    assert status["home"] is None and status["warning"] is None
    assert status["updated"] == format_iso(T0)
    assert status["time_left_seconds"] == 12 * H
    st = status_path(env).stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == os.geteuid()  # hers to read, the guard's to write
    assert sorted(os.listdir(env.tmp / "sockets" / "alice")) == [runtime_status.STATUS_FILE]  # no temp file left
    assert not status_path(env, "bob").exists()


def test_home_comes_from_her_line_of_the_usage_file(env, lab, usage_file):
    usage_file.write_text(
        json.dumps(
            {
                "alice": {"used_bytes": 120 * 2**20, "limit_bytes": 2**30, "measured_at": "2023-11-14T22:10:00Z"},
                "bob": {"used_bytes": 5, "limit_bytes": 0, "measured_at": "2023-11-14T22:10:00Z"},
            }
        )
    )
    lab.start("alice", "cpu", T0)
    assert read_status(env)["home"] == {
        "used_bytes": 120 * 2**20,
        "limit_bytes": 2**30,
        "measured_at": "2023-11-14T22:10:00Z",
    }
    # a line that is not what the contract says, or an unreadable file, gives no home rather than a wrong one
    usage_file.write_text(json.dumps({"alice": {"used_bytes": "a lot", "limit_bytes": 2**30}}))
    lab.run(T0 + M)
    assert read_status(env)["home"] is None
    usage_file.write_text("{not json")
    lab.run(T0 + 2 * M)
    status = read_status(env)
    assert status["home"] is None and status["updated"] == format_iso(T0 + 2 * M)


def test_every_guard_run_refreshes_it_and_a_warning_appears_in_it(env, lab):
    lab.start("alice", "cpu", T0)
    lab.run(T0 + H)
    status = read_status(env)
    assert status["time_left_seconds"] == 11 * H and status["updated"] == format_iso(T0 + H)
    assert status["warning"] is None
    # 14 minutes before the stop: the 15-minute warning, in the status file as the ledger recorded it
    warn_at = T0 + 12 * H - 14 * M
    report = lab.run(warn_at)
    assert report.warned == ["alice"]
    status = read_status(env)
    assert status["warning"]["at"] == format_iso(warn_at)
    assert "stops in 14m" in status["warning"]["message"]
    assert status["time_left_seconds"] == 14 * M
    # the next runs keep showing the newest warning; the 5-minute one replaces it
    lab.run(warn_at + M)
    assert read_status(env)["warning"]["at"] == format_iso(warn_at)
    lab.run(T0 + 12 * H - 4 * M)
    status = read_status(env)
    assert status["warning"]["at"] == format_iso(T0 + 12 * H - 4 * M) and "stops in 4m" in status["warning"]["message"]


def test_a_new_runtime_starts_without_the_old_runtimes_warning(env, lab):
    lab.start("alice", "cpu", T0)
    lab.run(T0 + 12 * H - 4 * M)
    assert read_status(env)["warning"] is not None
    lab.stop("alice", "user", T0 + 12 * H - 3 * M)
    lab.start("alice", "cpu", T0 + 13 * H)
    assert read_status(env)["warning"] is None


def test_a_link_she_planted_is_replaced_never_written_through(env, lab, tmp_path):
    lab.start("alice", "cpu", T0)
    target = tmp_path / "root-owned-file"
    target.write_text("precious\n")
    path = status_path(env)
    path.unlink()
    path.symlink_to(target)
    lab.run(T0 + M)
    assert target.read_text() == "precious\n"
    assert not path.is_symlink() and read_status(env)["updated"] == format_iso(T0 + M)


def test_a_socket_dir_replaced_by_a_link_is_not_followed_and_the_guard_still_enforces(env, lab, tmp_path):
    lab.start("alice", "cpu", T0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sockdir = env.tmp / "sockets" / "alice"
    for name in os.listdir(sockdir):
        os.unlink(sockdir / name)
    sockdir.rmdir()
    sockdir.symlink_to(elsewhere)
    report = lab.run(T0 + 12 * H)  # the status file cannot be written: the stop happens all the same
    assert report.stopped == [("alice", "limit")]
    assert os.listdir(elsewhere) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(env, lab):
    lab.start("alice", "cpu", T0)
    before = status_path(env).read_text()
    with pytest.raises(TypeError):
        runtime_status.write(str(env.tmp / "sockets" / "alice"), {"not json": object()})
    assert status_path(env).read_text() == before
    assert sorted(os.listdir(env.tmp / "sockets" / "alice")) == [runtime_status.STATUS_FILE]


def test_the_container_path_is_in_the_mounted_socket_dir():
    assert runtime_status.CONTAINER_STATUS_PATH == "/run/lab/metalab-status.json"


def test_a_drain_warning_reaches_her_status_file_too(env, lab):
    from metalab.host.guard import drain

    lab.start("alice", "cpu", T0)
    drain.drain(lab, "fleet update", T0 + M)
    warning = read_status(env)["warning"]
    assert warning["at"] == format_iso(T0 + M) and "is being updated (fleet update)" in warning["message"]
    lab.run(T0 + 2 * M)  # later runs keep it until a newer warning comes
    assert "fleet update" in read_status(env)["warning"]["message"]


def test_the_server_extension_reads_the_path_the_guard_writes():
    from pathlib import Path

    server = Path(__file__).resolve().parents[3] / "roles/runtime_image/files/metalab-jupyterlab"
    text = (server / "metalab_jupyterlab_status.py").read_text()
    assert f'STATUS_PATH = "{runtime_status.CONTAINER_STATUS_PATH}"' in text
