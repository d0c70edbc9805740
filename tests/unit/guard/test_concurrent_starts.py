"""Starts run their ``podman run`` without the guard lock (issue 20): users pressing Start at once do not queue behind
each other's podman run, and nothing that holds the guard lock (another start, the guard run, a stop, a drain) takes
a start in progress for a crash.

Each Lab here is what a separate metalab-guard process would be (its own lock file descriptors); the simulated
podman's ``run`` waits on a gate the test opens, so the test decides when a podman run "finishes"."""

from __future__ import annotations

import collections
import threading
from typing import Any, Dict, List

import pytest

from metalab.host.guard import drain
from metalab.host.guard.config import parse_config
from metalab.host.guard.engine import PodmanEngine
from metalab.host.guard.sessions import Failure, Lab

from .conftest import T0


class GatedPodman:
    """The simulated podman, with every ``run`` held until its user's gate opens; calls are serialised (the
    simulation keeps its state in one JSON file), the wait is not."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.mutex = threading.Lock()
        self.gates: Dict[str, threading.Event] = {}
        self.entered: Dict[str, threading.Event] = collections.defaultdict(threading.Event)
        self.log: List[str] = []

    def gate(self, user: str) -> threading.Event:
        return self.gates.setdefault(user, threading.Event())

    def __call__(self, argv, timeout):  # type: ignore[no-untyped-def]
        hook = getattr(self, "on_ps", None)
        if hook is not None and "ps" in argv:
            self.on_ps = None
            return hook(argv, timeout)
        if "run" in argv:
            user = argv[argv.index("--name") + 1].removeprefix("metalab-")
            gate = self.gate(user)
            self.entered[user].set()
            with self.mutex:
                self.log.append(f"run-begins {user}")
            assert gate.wait(20), f"the test never opened {user}'s gate"
            with self.mutex:
                self.log.append(f"run-ends {user}")
        with self.mutex:
            return self.sim(argv, timeout)


@pytest.fixture
def gated(env):  # type: ignore[no-untyped-def]
    podman = GatedPodman(env.sim)
    podman.env = env  # type: ignore[attr-defined]
    labs: List[Lab] = []

    def new_lab() -> Lab:
        config = parse_config(env.data, str(env.path))
        lab = Lab(config, engine=PodmanEngine(config.runtime, runner=podman))
        labs.append(lab)
        return lab

    podman.new_lab = new_lab  # type: ignore[attr-defined]
    yield podman
    for gate in podman.gates.values():
        gate.set()
    for lab in labs:
        lab.close()


def in_thread(gated, op, *args):  # type: ignore[no-untyped-def]
    """Run ``op(lab, *args)`` in a thread with a Lab of its own (like a second metalab-guard process; SQLite
    connections stay in the thread that made them)."""
    box: Dict[str, Any] = {}

    def target() -> None:
        config = parse_config(gated.env.data, str(gated.env.path))
        lab = Lab(config, engine=PodmanEngine(config.runtime, runner=gated))
        try:
            box["result"] = op(lab, *args)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc
        finally:
            lab.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def states(lab: Lab) -> Dict[str, str]:
    return {r.user: r.state for r in lab.ledger.open_runtimes()}


def test_two_users_podman_runs_overlap(gated):
    alice_gate, carol_gate = gated.gate("alice"), gated.gate("carol")
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    # alice's podman run is under way and has not returned: carol's start gets through to her own podman run.
    t2, r2 = in_thread(gated, Lab.start, "carol", "cpu", T0)
    assert gated.entered["carol"].wait(10), "carol's start waited for alice's podman run"
    assert gated.log[:2] == ["run-begins alice", "run-begins carol"]
    carol_gate.set()
    t2.join(10)
    alice_gate.set()
    t1.join(10)
    assert "error" not in r1 and "error" not in r2, (r1, r2)
    assert states(gated.new_lab()) == {"alice": "running", "carol": "running"}


def test_the_same_user_cannot_start_twice_while_her_first_start_is_at_work(gated):
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    with pytest.raises(Exception, match="already has a cpu runtime"):
        gated.new_lab().start("alice", "cpu", T0)
    gated.gate("alice").set()
    t1.join(10)
    assert r1["result"]["user"] == "alice"


def test_a_guard_run_during_a_start_leaves_it_alone_and_the_start_finishes(gated):
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    report = gated.new_lab().run(T0 + 1)
    assert report.crashed == [] and report.orphans == []
    assert states(gated.new_lab()) == {"alice": "starting"}
    gated.gate("alice").set()
    t1.join(10)
    assert "error" not in r1, r1
    assert states(gated.new_lab()) == {"alice": "running"}


def test_a_start_whose_process_died_is_still_closed_by_the_next_reconcile(env, gated):
    # The ledger row of a start killed before its podman run ran: nobody holds alice's start lock.
    lab = gated.new_lab()
    lab.ledger.insert_starting("alice", "lab1", "cpu", None, "metalab-alice", T0, "test")
    report = lab.run(T0 + 60)
    assert report.crashed == ["alice"]
    assert states(lab) == {}


def test_a_stop_during_a_start_waits_for_it_then_stops_what_it_started(env, gated):
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    t2, r2 = in_thread(gated, Lab.stop, "alice", "admin", T0 + 5)
    t2.join(0.5)
    assert t2.is_alive(), "the stop did not wait for the start at work"
    gated.gate("alice").set()
    t1.join(10)
    t2.join(10)
    assert "error" not in r1 and "error" not in r2, (r1, r2)
    assert r2["result"]["stopped"] is True and r2["result"]["reason"] == "admin"
    assert states(gated.new_lab()) == {}
    assert "metalab-alice" not in env.sim.containers() or not env.sim.containers()["metalab-alice"].get("running")


def test_a_stop_gives_up_with_a_message_when_the_start_never_finishes(env, gated):
    env.data["lock_timeout"] = 1
    env.write()
    t1, _ = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    with pytest.raises(Failure, match="start of alice's runtime is still in progress"):
        gated.new_lab().stop("alice", "admin", T0 + 5)
    gated.gate("alice").set()
    t1.join(10)
    assert states(gated.new_lab()) == {"alice": "running"}


def test_a_drain_waits_for_the_starts_at_work_and_then_lists_them_as_running(env, gated):
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)
    t2, r2 = in_thread(gated, drain.drain, "kernel update", T0 + 1)
    t2.join(0.5)
    assert t2.is_alive(), "the drain did not wait for the start at work"
    # Once the drain file is set, a new start is refused at once (it does not wait for anything).
    with pytest.raises(Exception, match="drain|maintenance|kernel update"):
        gated.new_lab().start("carol", "cpu", T0 + 2)
    gated.gate("alice").set()
    t1.join(10)
    t2.join(10)
    assert "error" not in r1 and "error" not in r2, (r1, r2)
    assert [r["user"] for r in r2["result"]["running"]] == ["alice"]
    assert r2["result"]["running"][0]["state"] == "running"


def test_a_start_that_finishes_while_a_guard_run_lists_containers_is_not_taken_for_a_crash(env, gated):
    """The guard run reads the open rows and which starts are at work before it lists the containers: a start that
    finishes right after an earlier listing would otherwise look like a runtime whose container is gone."""
    t1, r1 = in_thread(gated, Lab.start, "alice", "cpu", T0)
    assert gated.entered["alice"].wait(10)

    def stale_listing(argv, timeout):  # type: ignore[no-untyped-def]
        with gated.mutex:
            listing = env.sim(argv, timeout)  # taken before alice's podman run has made her container
        gated.gate("alice").set()
        t1.join(10)  # her start finishes: container running, row running, start lock released
        return listing

    gated.on_ps = stale_listing
    lab = gated.new_lab()
    report = lab.run(T0 + 1)
    assert "error" not in r1, r1
    assert report.crashed == [] and report.orphans == []
    assert states(lab) == {"alice": "running"}
    assert env.sim.containers()["metalab-alice"]["state"] == "running"
    assert (env.tmp / "tokens" / "alice").exists()  # her token (and socket) were not released
