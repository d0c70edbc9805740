from __future__ import annotations

import os
import stat

import pytest

from metalab.host.guard import metrics, sessions
from metalab.host.guard.sessions import Failure, Refused

from .conftest import T0, H

M = 60


def open_rows(lab):  # type: ignore[no-untyped-def]
    return {r.user: r for r in lab.ledger.open_runtimes()}


# -- start ----------------------------------------------------------------------------------------------------


def test_start_cpu_records_the_session_and_runs_the_container(env, lab):
    info = lab.start("alice", "cpu", T0)
    assert info["user"] == "alice" and info["kind"] == "cpu" and info["gpu"] is None
    assert info["time_left_seconds"] == 12 * H
    row = open_rows(lab)["alice"]
    assert row.state == "running" and row.host == "lab1" and row.started == T0
    container = env.sim.containers()["metalab-alice"]
    assert container["labels"]["metalab.session"] == str(row.id)
    assert [e["action"] for e in lab.ledger.events(row.id)] == ["start-requested", "started"]


def test_a_start_with_nothing_to_reconcile_runs_podman_once(env, lab):
    # No open row of hers and no GPU needed: no `podman ps` before her `podman run` (docs/performance.md).
    lab.start("alice", "cpu", T0)
    assert [c[1] for c in env.sim.calls()] == ["run"]


def test_a_start_after_her_runtime_crashed_reconciles_first(env, lab):
    lab.start("alice", "cpu", T0)
    env.sim.crash("metalab-alice")  # no guard run in between
    info = lab.start("alice", "cpu", T0 + H)
    assert info["session"] == 2 and open_rows(lab)["alice"].id == 2
    assert lab.ledger.get(1).end_reason == "crash"
    assert env.sim.containers()["metalab-alice"]["state"] == "running"


def test_a_start_removes_a_leftover_container_of_her_name_without_an_open_row(env, lab):
    env.sim.add_container("metalab-alice", {"metalab.user": "alice", "metalab.session": "99"})
    info = lab.start("alice", "cpu", T0)
    container = env.sim.containers()["metalab-alice"]
    assert container["state"] == "running" and container["labels"]["metalab.session"] == str(info["session"])
    assert lab.ledger.events(action="orphan-removed")[0]["detail"] == {"container": "metalab-alice"}
    # Another user's container is nobody's business here: the guard run removes it.
    env.sim.add_container("metalab-eve", {"metalab.user": "eve", "metalab.session": "98"})
    lab.start("bob", "cpu", T0)
    assert "metalab-eve" in env.sim.containers()


def test_token_travels_in_an_env_file_only_which_is_removed(env, lab):
    lab.start("alice", "cpu", T0)
    token_path = env.tmp / "tokens" / "alice"
    token = token_path.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((env.tmp / "tokens").stat().st_mode) == 0o700
    container = env.sim.containers()["metalab-alice"]
    assert container["env"]["JUPYTER_TOKEN"] == token
    assert container["env"]["HTTPS_PROXY"] == "http://proxy.example:3128"
    for call in env.sim.calls():
        assert not any(token in arg for arg in call)
    assert os.listdir(env.tmp / "envdir") == []


def test_socket_dir_mode_and_group(env, lab):
    lab.start("alice", "cpu", T0)
    st = (env.tmp / "sockets" / "alice").stat()
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_gid == os.getgid()
    if os.geteuid() == 0:
        assert st.st_uid == 2001


def test_token_changes_at_every_start_and_dies_with_the_runtime(env, lab):
    token_path = env.tmp / "tokens" / "alice"
    lab.start("alice", "cpu", T0)
    first = token_path.read_text()
    assert env.sim.containers()["metalab-alice"]["env"]["JUPYTER_TOKEN"] == first.strip()
    lab.stop("alice", "user", T0 + H)
    assert not token_path.exists()  # nobody is handed the token of a stopped runtime
    lab.start("alice", "cpu", T0 + 2 * H)
    second = token_path.read_text()
    assert second != first and len(second.strip()) >= 32
    assert env.sim.containers()["metalab-alice"]["env"]["JUPYTER_TOKEN"] == second.strip()
    # a crash (container gone) ends the token too, at the next guard run
    env.sim.crash("metalab-alice")
    lab.run(T0 + 2 * H + 60)
    assert not token_path.exists()


@pytest.mark.parametrize(
    ("user", "kind", "match"),
    [
        ("mallory", "cpu", "unknown user 'mallory'"),
        ("bob", "gpu", "bob may not start GPU runtimes"),
        ("alice", "tpu", "unknown runtime kind"),
    ],
)
def test_start_refusals_change_nothing(env, lab, user, kind, match):
    with pytest.raises(Refused, match=match):
        lab.start(user, kind, T0)
    assert lab.ledger.open_runtimes() == []
    assert lab.ledger.events() == []
    assert env.sim.calls("run") == []


def test_second_runtime_for_a_user_is_refused(env, lab):
    lab.start("alice", "cpu", T0)
    with pytest.raises(Refused, match="alice already has a cpu runtime"):
        lab.start("alice", "gpu", T0 + 60)
    assert len(env.sim.calls("run")) == 1
    assert len(lab.ledger.open_runtimes()) == 1


def test_gpu_on_a_host_without_gpus(env):
    env.data["runtime"]["gpus"] = []
    lab = env.lab()
    with pytest.raises(Refused, match="host lab1 has no GPUs"):
        lab.start("alice", "gpu", T0)


def test_budget_exhausted_refusal_names_the_reset_time(env):
    env.data["policy"] = {"preset": "studiolab-2023"}
    lab = env.lab()
    lab.start("alice", "gpu", T0)
    lab.run(T0 + 4 * H)  # stopped by the limit, the budget is spent as well
    assert lab.ledger.get(1).end_reason == "limit"
    calls = len(env.sim.calls())
    with pytest.raises(Refused, match=r"gpu budget exhausted until 22:18 UTC"):
        lab.start("alice", "gpu", T0 + 5 * H)
    assert len(env.sim.calls()) == calls  # no podman at all: she has no open row, so nothing to reconcile first
    assert lab.start("alice", "cpu", T0 + 5 * H)["kind"] == "cpu"  # the CPU budget is separate


# -- GPUs ------------------------------------------------------------------------------------------------------


def test_gpu_assignment_lowest_free_busy_all_busy_released(env, lab):
    assert lab.free_gpus() == [0, 1]
    assert lab.start("alice", "gpu", T0)["gpu"] == 0
    assert lab.free_gpus() == [1]
    assert lab.start("carol", "gpu", T0)["gpu"] == 1
    with pytest.raises(Refused, match=r"no GPU runtime available right now \(2 of 2 in use\)"):
        lab.start("dave", "gpu", T0)
    lab.stop("alice", "user", T0 + H)  # released on stop
    assert lab.free_gpus() == [0]
    assert lab.start("dave", "gpu", T0 + H)["gpu"] == 0
    env.sim.vanish("metalab-carol")  # released on crash, noticed by the next start
    assert lab.start("alice", "gpu", T0 + 2 * H)["gpu"] == 1
    assert lab.ledger.get(2).end_reason == "crash"
    runs = [c for c in env.sim.calls("run")]
    assert [c[c.index("--device") + 1] for c in runs] == [f"nvidia.com/gpu={g}" for g in (0, 1, 0, 1)]


def test_gpu_released_when_the_guard_sees_a_crash(env, lab):
    lab.start("alice", "gpu", T0)
    env.sim.crash("metalab-alice")
    report = lab.run(T0 + 60)
    assert report.crashed == ["alice"]
    assert lab.free_gpus() == [0, 1]
    assert "metalab-alice" not in env.sim.containers()  # the exited container was removed


# -- start failures ----------------------------------------------------------------------------------------------


def test_engine_failure_on_start_closes_the_row(env, lab):
    env.sim.update(fail=["run"])
    with pytest.raises(Failure, match="simulated run failure"):
        lab.start("alice", "cpu", T0)
    assert lab.ledger.open_runtimes() == []
    assert lab.ledger.get(1).end_reason == "start-failed"
    assert os.listdir(env.tmp / "envdir") == []


# -- stop and extend ----------------------------------------------------------------------------------------------


def test_stop_is_two_phase_and_idempotent(env, lab):
    lab.start("alice", "cpu", T0)
    result = lab.stop("alice", "user", T0 + H)
    assert result["stopped"] and result["reason"] == "user"
    row = lab.ledger.get(1)
    assert (row.state, row.ended, row.end_reason) == ("ended", T0 + H, "user")
    actions = [e["action"] for e in lab.ledger.events(1)]
    assert actions == ["start-requested", "started", "stop-requested", "ended"]
    assert env.sim.containers() == {}
    again = lab.stop("alice", "user", T0 + 2 * H)
    assert not again["stopped"]
    assert [e["action"] for e in lab.ledger.events(1)].count("ended") == 1


def test_stop_unknown_user_is_refused(lab):
    with pytest.raises(Refused, match="unknown user"):
        lab.stop("mallory", "admin", T0)


def test_stop_engine_failure_leaves_the_row_stopping_for_the_next_run(env, lab):
    lab.start("alice", "cpu", T0)
    env.sim.update(fail=["stop"])
    with pytest.raises(Failure, match="next guard run retries"):
        lab.stop("alice", "admin", T0 + H)
    assert lab.ledger.get(1).state == "stopping"
    with pytest.raises(Refused, match="still stopping"):
        lab.start("alice", "cpu", T0 + H + 30)
    env.sim.update(fail=[])
    report = lab.run(T0 + H + 60)
    assert report.finished == ["alice"]
    assert lab.ledger.get(1).end_reason == "admin"


def test_extend_is_recorded_and_moves_the_stop(env, lab):
    lab.start("alice", "gpu", T0)
    info = lab.extend("alice", 30 * M, T0 + H)
    assert info["time_left_seconds"] == 3 * H + 30 * M
    events = lab.ledger.events(1, "extended")
    assert events[0]["detail"] == {"seconds": 30 * M, "total": 30 * M}
    assert lab.run(T0 + 4 * H).stopped == []
    assert lab.run(T0 + 4 * H + 30 * M).stopped == [("alice", "limit")]


def test_extend_refusals(lab):
    with pytest.raises(Refused, match="has no runtime running"):
        lab.extend("alice", 60, T0)
    with pytest.raises(Refused, match="longer than zero"):
        lab.extend("alice", 0, T0)
    with pytest.raises(Refused, match="unknown user"):
        lab.extend("mallory", 60, T0)


# -- guard run ---------------------------------------------------------------------------------------------------


def test_guard_warns_each_warning_once_then_stops(env, lab):
    lab.start("alice", "gpu", T0)
    notice = env.tmp / "home" / "alice" / ".metalab" / "session-notice.txt"
    assert lab.run(T0 + 3 * H).warned == []
    assert lab.run(T0 + 3 * H + 45 * M).warned == ["alice"]  # 15m left
    assert "stops in 15m" in notice.read_text()
    assert lab.run(T0 + 3 * H + 46 * M).warned == []
    assert lab.run(T0 + 3 * H + 55 * M).warned == ["alice"]  # 5m left
    assert lab.run(T0 + 3 * H + 56 * M).warned == []
    messages = env.sim.containers()["metalab-alice"]["messages"]
    assert len(messages) == 2
    assert messages[0]["user"] == "2001:2001"
    assert messages[0]["argv"][-1].startswith("metalab: your gpu runtime stops in 15m")
    report = lab.run(T0 + 4 * H)
    assert report.stopped == [("alice", "limit")]
    row = lab.ledger.get(1)
    assert (row.end_reason, row.ended, row.warnings_sent) == ("limit", T0 + 4 * H, [15 * M, 5 * M])
    assert len(lab.ledger.events(1, "warned")) == 2
    if os.geteuid() == 0:
        assert notice.stat().st_uid == 2001


def test_notice_does_not_follow_a_planted_symlink(env, lab):
    target = env.tmp / "victim"
    target.write_text("precious\n")
    home = env.tmp / "home" / "alice"
    (home / ".metalab").mkdir()
    if os.geteuid() == 0:
        os.chown(home / ".metalab", 2001, 2001)
    os.symlink(target, home / ".metalab" / "session-notice.txt")
    lab.start("alice", "gpu", T0)
    lab.run(T0 + 3 * H + 50 * M)
    assert target.read_text() == "precious\n"
    assert not (home / ".metalab" / "session-notice.txt").is_symlink()


def test_guard_stops_for_budget(env):
    env.data["policy"] = {"preset": "studiolab-2023"}
    lab = env.lab()
    lab.start("alice", "cpu", T0)
    lab.stop("alice", "user", T0 + 3 * H)
    lab.start("alice", "cpu", T0 + 4 * H)  # 5h of the 8h budget left... 3h used, 5h left, limit 4h
    assert lab.status(T0 + 4 * H)[0]["stop_reason"] == "limit"
    lab.stop("alice", "user", T0 + 7 * H)  # 6h used
    lab.start("alice", "cpu", T0 + 8 * H)
    assert lab.status(T0 + 8 * H)[0]["budget_left_seconds"] == 2 * H
    assert lab.run(T0 + 10 * H - 1).stopped == []
    assert lab.run(T0 + 10 * H).stopped == [("alice", "budget")]


def test_guard_closes_crashed_and_gone_runtimes(env, lab):
    lab.start("alice", "cpu", T0)
    lab.start("bob", "cpu", T0)
    env.sim.crash("metalab-alice")
    env.sim.vanish("metalab-bob")
    report = lab.run(T0 + 60)
    assert sorted(report.crashed) == ["alice", "bob"]
    assert {lab.ledger.get(i).end_reason for i in (1, 2)} == {"crash"}
    assert lab.run(T0 + 120).crashed == []  # closed once


def test_guard_removes_orphan_containers(env, lab):
    env.sim.add_container("metalab-eve", {"metalab.user": "eve", "metalab.session": "99"})
    report = lab.run(T0)
    assert report.orphans == ["metalab-eve"]
    assert env.sim.containers() == {}
    assert lab.ledger.events(action="orphan-removed")[0]["detail"] == {
        "container": "metalab-eve",
        "session_label": "99",
    }


def test_a_run_that_cannot_take_the_lock_says_so(env):
    env.data["run_lock_wait"] = 1
    lab = env.lab()
    lab.start("alice", "gpu", T0)
    other = env.lab()
    assert other.lock.acquire(0)
    try:
        report = lab.run(T0 + 5 * H)
    finally:
        other.lock.release()
    assert report.skipped and report.stopped == []
    assert "stayed busy" in report.errors[0]
    assert lab.ledger.get(1).state == "running"
    assert (env.tmp / "state" / "guard.last-skip").stat().st_mtime == T0 + 5 * H
    assert lab.ledger.meta("skipped_runs") == "1"
    text = metrics.render(lab.ledger, T0 + 5 * H, "lab1", {})
    assert "metalab_guard_skipped_runs_total 1" in text
    assert f"metalab_guard_last_skipped_timestamp_seconds {T0 + 5 * H:.0f}" in text
    # the next run, with the lock free, enforces
    assert lab.run(T0 + 5 * H + 60).stopped == [("alice", "limit")]


def test_boot_closes_every_open_row_at_the_last_guard_run(env, lab):
    lab.start("alice", "cpu", T0)
    lab.start("carol", "gpu", T0 + 60)
    lab.run(T0 + 10 * M)
    report = lab.boot(T0 + 2 * H)  # host was down from ~T0+10m
    assert sorted(u for u, _ in report.stopped) == ["alice", "carol"]
    for row_id in (1, 2):
        row = lab.ledger.get(row_id)
        assert (row.end_reason, row.ended) == ("host-restart", T0 + 10 * M)
    assert lab.ledger.open_runtimes() == [] and env.sim.containers() == {}
    assert lab.boot(T0 + 3 * H).stopped == []


# -- status and usage --------------------------------------------------------------------------------------------


def test_status_and_usage(env):
    env.data["users"]["alice"]["budgets"] = {"gpu": "6h"}
    lab = env.lab()
    lab.start("alice", "gpu", T0)
    lab.stop("alice", "user", T0 + H)
    lab.start("alice", "gpu", T0 + 2 * H)
    lab.start("bob", "cpu", T0 + 2 * H)
    status = {s["user"]: s for s in lab.status(T0 + 3 * H)}
    assert status["alice"]["time_left_seconds"] == 3 * H
    assert status["alice"]["budget_left_seconds"] == 4 * H
    assert status["alice"]["gpu"] == 0 and status["alice"]["host"] == "lab1"
    assert status["bob"]["budget_left_seconds"] is None
    usage = lab.usage(0, T0 + 3 * H)
    assert usage == [
        {"user": "alice", "kind": "gpu", "seconds": 2 * H, "hours": 2.0, "sessions": 2},
        {"user": "bob", "kind": "cpu", "seconds": H, "hours": 1.0, "sessions": 1},
    ]
    assert lab.usage(T0 + 2 * H + 30 * M, T0 + 3 * H)[0]["seconds"] == 30 * M


# -- health marker -----------------------------------------------------------------------------------------------


def test_every_run_touches_the_last_run_marker_beside_the_ledger(env, lab):
    marker = sessions.last_run_path(env.data["ledger"])
    assert marker == str(env.tmp / "state" / "guard.last-run")
    assert not os.path.exists(marker)
    lab.run(T0)
    assert os.stat(marker).st_mtime == T0
    lab.run(T0 + 60)
    assert os.stat(marker).st_mtime == T0 + 60
    lab.boot(T0 + 120)  # only `run` marks: a boot alone does not prove that cron runs the guard
    assert os.stat(marker).st_mtime == T0 + 60


def test_an_unwritable_marker_does_not_fail_the_run(env, lab, monkeypatch):
    monkeypatch.setattr(sessions, "last_run_path", lambda ledger: str(env.tmp / "missing" / "dir" / "x"))
    report = lab.run(T0)
    assert report.errors == []
