"""Drain: a drained host refuses new runtimes with a clear message and leaves running ones alone (warned)."""

from __future__ import annotations

import json
import os

import pytest

from metalab.host.guard import drain
from metalab.host.guard.config import ConfigError, parse_config
from metalab.host.guard.sessions import Refused

from .conftest import T0


def drain_path(env) -> str:  # type: ignore[no-untyped-def]
    return str(env.data["drain_file"])


def test_start_on_a_drained_host_is_refused_and_changes_nothing(env, lab):
    drain.set_drain(drain_path(env), "kernel update by ops")
    with pytest.raises(Refused, match=r"host is being updated \(lab1 since \d\d:\d\d UTC: kernel update by ops\)"):
        lab.start("alice", "cpu", T0)
    assert lab.ledger.open_runtimes() == []
    assert env.sim.containers() == {}


def test_start_works_again_once_undrained(env, lab):
    drain.set_drain(drain_path(env), "update")
    assert drain.clear(drain_path(env)) is True
    assert drain.clear(drain_path(env)) is False
    assert lab.start("alice", "cpu", T0)["user"] == "alice"


def test_an_empty_or_unreadable_drain_file_still_drains(env, lab):
    with open(drain_path(env), "w", encoding="utf-8"):
        pass
    with pytest.raises(Refused, match=r"host is being updated .*a rolling update"):
        lab.start("alice", "cpu", T0)
    os.unlink(drain_path(env))
    os.mkdir(drain_path(env))  # exists, cannot be read as a file
    with pytest.raises(Refused, match="host is being updated"):
        lab.start("bob", "cpu", T0)


def test_set_drain_keeps_an_existing_reason(env):
    assert drain.set_drain(drain_path(env), "first") is True
    assert drain.set_drain(drain_path(env), "second") is False
    current = drain.read(drain_path(env))
    assert current is not None and current.reason == "first"


def test_drain_warns_running_runtimes_and_leaves_them_running(env, lab):
    lab.start("alice", "cpu", T0)
    result = drain.drain(lab, "fleet update", T0 + 60)
    assert result["created"] is True and result["warned"] == ["alice"]
    assert [(r["user"], r["state"]) for r in result["running"]] == [("alice", "running")]
    notice = env.tmp / "home" / "alice" / ".metalab" / "session-notice.txt"
    assert "lab1 is being updated (fleet update)" in notice.read_text()
    assert env.sim.containers()["metalab-alice"]["state"] == "running"
    assert drain.drain(lab, "fleet update", T0 + 120)["created"] is False


def test_cli_drain_start_refused_exit_2_undrain(env):
    out = env.cli("drain", "--reason", "site roles", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] is True
    refused = env.cli("start", "alice")
    assert refused.returncode == 2
    assert "host is being updated" in refused.stderr and "site roles" in refused.stderr
    undrained = env.cli("undrain", "--json")
    assert undrained.returncode == 0 and json.loads(undrained.stdout)["removed"] is True
    assert env.cli("start", "alice").returncode == 0


def test_drain_file_must_be_absolute(env):
    env.data["drain_file"] = "relative/drain"
    with pytest.raises(ConfigError, match="drain_file"):
        parse_config(env.data)


class FakeClock:
    """time.time and time.sleep for drain's wait loop, and a hook that runs at each sleep."""

    def __init__(self, start: float, on_sleep=None) -> None:  # type: ignore[no-untyped-def]
        self.now = start
        self.on_sleep = on_sleep
        self.sleeps = 0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self)


def test_drain_waits_for_runtimes_that_end_by_themselves(env, lab):
    lab.start("alice", "cpu", T0)
    lab.start("bob", "cpu", T0)

    def alice_exits(clock: FakeClock) -> None:
        if clock.sleeps == 2:
            env.sim.vanish("metalab-alice")
        if clock.sleeps == 3:
            env.sim.vanish("metalab-bob")

    clock = FakeClock(T0 + 60, alice_exits)
    result = drain.drain(lab, "update", T0 + 60, wait=600, poll=10, sleep=clock.sleep, clock=clock.time)
    assert result["finished"] == ["alice", "bob"] and result["running"] == [] and result["stopped"] == []
    assert clock.sleeps == 3  # stops waiting as soon as nothing runs


def test_drain_stops_what_still_runs_after_the_wait(env, lab):
    lab.start("alice", "cpu", T0)
    clock = FakeClock(T0 + 60)
    result = drain.drain(lab, "update", T0 + 60, wait=30, stop=True, poll=10, sleep=clock.sleep, clock=clock.time)
    assert clock.now == T0 + 90
    assert result["stopped"] == ["alice"] and result["running"] == [] and result["finished"] == []
    assert "metalab-alice" not in env.sim.containers()
    assert [r.end_reason for r in lab.ledger.sessions_since(0)] == [drain.STOP_REASON]


def test_drain_without_stop_leaves_runtimes_running(env, lab):
    lab.start("alice", "cpu", T0)
    clock = FakeClock(T0 + 60)
    result = drain.drain(lab, "update", T0 + 60, wait=20, poll=10, sleep=clock.sleep, clock=clock.time)
    assert [r["user"] for r in result["running"]] == ["alice"] and result["stopped"] == []
    assert env.sim.containers()["metalab-alice"]["state"] == "running"
