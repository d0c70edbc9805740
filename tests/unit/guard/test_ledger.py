from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from simulated_podman import WITH_SIMULATED_PODMAN

from metalab.host.guard.ledger import Ledger, LedgerError

from .conftest import SRC, T0, H


@pytest.fixture
def ledger(tmp_path):  # type: ignore[no-untyped-def]
    led = Ledger(str(tmp_path / "ledger.sqlite"))
    yield led
    led.close()


def test_wal_mode_and_private_file(ledger, tmp_path):
    assert ledger.journal_mode() == "wal"
    assert oct(os.stat(tmp_path / "ledger.sqlite").st_mode & 0o777) == "0o600"
    other = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_never_two_open_rows_for_a_user(ledger):
    ledger.insert_starting("alice", "lab1", "cpu", None, "metalab-alice", T0, "t")
    with pytest.raises(LedgerError, match="alice already has an open runtime"):
        ledger.insert_starting("alice", "lab1", "gpu", 0, "metalab-alice", T0, "t")
    assert len(ledger.open_runtimes()) == 1
    assert len(ledger.events()) == 1  # the failed insert left no event behind either


def test_never_two_open_rows_on_one_gpu(ledger):
    ledger.insert_starting("alice", "lab1", "gpu", 0, "metalab-alice", T0, "t")
    with pytest.raises(LedgerError):
        ledger.insert_starting("carol", "lab1", "gpu", 0, "metalab-carol", T0, "t")


def test_close_is_exactly_once(ledger):
    row = ledger.insert_starting("alice", "lab1", "cpu", None, "metalab-alice", T0, "t")
    assert ledger.mark_running(row.id, T0, "t")
    assert ledger.mark_stopping(row.id, "limit", T0 + H, "t")
    assert not ledger.mark_stopping(row.id, "admin", T0 + H, "t")  # the first reason stays
    assert ledger.close_row(row.id, None, T0 + H, T0 + H, "t")
    assert not ledger.close_row(row.id, "crash", T0 + 2 * H, T0 + 2 * H, "t")
    closed = ledger.get(row.id)
    assert (closed.state, closed.end_reason, closed.ended) == ("ended", "limit", T0 + H)
    assert len(ledger.events(row.id, "ended")) == 1
    # and the user may start again
    ledger.insert_starting("alice", "lab1", "cpu", None, "metalab-alice", T0 + 3 * H, "t")


def test_state_and_ended_cannot_disagree(ledger):
    with pytest.raises(sqlite3.IntegrityError):
        ledger.conn.execute(
            "INSERT INTO runtimes (user, host, kind, container, state, started) VALUES ('x','h','cpu','c','ended',1)"
        )


def test_a_writer_killed_mid_transaction_leaves_nothing(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()
    code = f"""
import os, signal, sys
sys.path.insert(0, {SRC!r})
from metalab.host.guard.ledger import Ledger
led = Ledger({path!r})
with led.transaction() as cur:
    cur.execute("INSERT INTO runtimes (user, host, kind, container, state, started)"
                " VALUES ('alice', 'lab1', 'cpu', 'metalab-alice', 'starting', 1)")
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -signal.SIGKILL
    led = Ledger(path)
    assert led.open_runtimes() == []
    assert led.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    led.close()


# -- kill -9 between the phases, through the real CLI ---------------------------------------------------------


def run_json(env, *args, now):  # type: ignore[no-untyped-def]
    proc = env.cli(*args, "--json", now=now)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("point", ["before-stop", "after-stop"])
def test_guard_killed_during_a_stop_is_finished_by_the_next_run_exactly_once(env, lab, point):
    lab.start("alice", "gpu", T0)
    env.sim.update(kill_at=point)
    assert env.cli("run", now=T0 + 4 * H).returncode == -signal.SIGKILL
    row = lab.ledger.get(1)
    assert (row.state, row.stop_reason, row.ended) == ("stopping", "limit", None)
    report = run_json(env, "run", now=T0 + 4 * H + 60)
    assert report["finished_stops"] == ["alice"]
    row = lab.ledger.get(1)
    assert (row.state, row.end_reason) == ("ended", "limit")
    assert env.sim.containers() == {}
    assert run_json(env, "run", now=T0 + 4 * H + 120)["finished_stops"] == []
    assert len(lab.ledger.events(1, "ended")) == 1
    assert lab.free_gpus() == [0, 1]


def test_admin_stop_killed_midway_keeps_its_reason(env, lab):
    lab.start("alice", "cpu", T0)
    env.sim.update(kill_at="after-stop")
    assert env.cli("stop", "alice", "--reason", "admin", now=T0 + H).returncode == -signal.SIGKILL
    run_json(env, "run", now=T0 + H + 60)
    assert lab.ledger.get(1).end_reason == "admin"
    assert len(lab.ledger.events(1, "ended")) == 1


def test_start_killed_after_podman_run_is_adopted(env, lab):
    env.sim.update(kill_at="after-run")
    assert env.cli("start", "alice", now=T0).returncode == -signal.SIGKILL
    assert lab.ledger.get(1).state == "starting"
    assert run_json(env, "run", now=T0 + 60)["recovered_starts"] == ["alice"]
    assert lab.ledger.get(1).state == "running"
    assert env.cli("start", "alice", now=T0 + 120).returncode == 2
    assert len(lab.ledger.open_runtimes()) == 1


def test_start_killed_before_podman_run_is_closed(env, lab):
    env.sim.update(kill_at="before-run")
    assert env.cli("start", "alice", "--gpu", now=T0).returncode == -signal.SIGKILL
    assert run_json(env, "run", now=T0 + 60)["crashed"] == ["alice"]
    row = lab.ledger.get(1)
    assert (row.end_reason, lab.ledger.events(1, "ended")[0]["detail"]["phase"]) == ("crash", "starting")
    assert run_json(env, "start", "alice", "--gpu", now=T0 + 120)["gpu"] == 0


def test_two_concurrent_guard_runs_take_turns(env, lab):
    lab.start("alice", "gpu", T0)
    lab.start("bob", "cpu", T0)
    env.sim.update(delay={"ps": 1.5})
    cmd_env = dict(os.environ, PYTHONPATH=SRC, METALAB_GUARD_CONFIG=str(env.path))
    argv = [sys.executable, WITH_SIMULATED_PODMAN, str(env.state), "-m", "metalab.host.guard.cli"]
    argv += ["--now", repr(T0 + 13 * H), "run", "--json"]
    procs = [subprocess.Popen(argv, env=cmd_env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    reports = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    # The second waits for the first instead of skipping; the first stops both, the second finds nothing left.
    assert [r["skipped"] for r in reports] == [False, False]
    assert sorted(len(r["stopped"]) for r in reports) == [0, 2]
    assert len(env.sim.calls("stop")) == 2
    assert len(lab.ledger.events(action="ended")) == 2
