"""Idle culling: the decision, the probe of JupyterLab over its unix socket, and the guard run's warnings and stop."""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from metalab.host.guard import idle
from metalab.host.guard.config import ConfigError, parse_config
from metalab.host.guard.engine import PodmanEngine
from metalab.host.guard.idle import Activity, idle_since, idle_stop_at
from metalab.host.guard.policy import format_iso
from metalab.host.guard.sessions import Lab
from metalab.rules import parse_idle_timeouts

from .conftest import T0, Env

M = 60
H = 3600


def iso(epoch: float) -> str:
    return format_iso(epoch).replace("Z", ".123456Z")  # jupyter_server's form, with microseconds


# -- the decision ---------------------------------------------------------------------------------------------------


def test_old_activity_is_idle_since_then():
    activity = Activity(last_activity=T0 + 10 * M)
    assert idle_since(T0, activity, T0 + 2 * H) == T0 + 10 * M
    assert idle_stop_at(H, T0, activity, T0 + 2 * H) == T0 + 10 * M + H


def test_busy_kernel_is_active_now():
    activity = Activity(last_activity=T0, busy=True)
    assert idle_stop_at(H, T0, activity, T0 + 5 * H) == T0 + 6 * H


def test_browser_connection_is_active_now():
    activity = Activity(last_activity=T0, connections=1)
    assert idle_stop_at(H, T0, activity, T0 + 5 * H) == T0 + 6 * H


def test_recent_terminal_counts():
    status = {"last_activity": iso(T0), "connections": 0, "kernels": 0}
    activity = idle.activity_from(status, [], [{"name": "1", "last_activity": iso(T0 + 50 * M)}])
    assert idle_stop_at(H, T0, activity, T0 + H + 10 * M) == pytest.approx(T0 + 50 * M + H, abs=1)


def test_kernel_reports_count():
    status = {"last_activity": iso(T0), "connections": 0, "kernels": 1}
    kernels = [{"id": "k", "execution_state": "idle", "last_activity": iso(T0 + 20 * M), "connections": 0}]
    assert idle.activity_from(status, kernels, None) == Activity(pytest.approx(T0 + 20 * M, abs=1), False, 0)
    kernels = [{"id": "k", "execution_state": "busy", "last_activity": iso(T0), "connections": 2}]
    assert idle.activity_from(status, kernels, []) == Activity(pytest.approx(T0, abs=1), True, 2)


def test_not_answering_is_never_idle():
    assert idle_since(T0, None, T0 + 10 * H) is None
    assert idle_stop_at(H, T0, None, T0 + 10 * H) is None


def test_idle_clock_starts_no_earlier_than_the_runtime():
    # A JupyterLab that reports activity from before this runtime started (a clock, a restored server) is idle from
    # the runtime's start, not before.
    assert idle_stop_at(H, T0 + 5 * H, Activity(last_activity=T0), T0 + 5 * H + M) == T0 + 6 * H


def test_null_timeout_never_stops():
    assert idle_stop_at(None, T0, Activity(last_activity=T0), T0 + 100 * H) is None


def test_bad_answer_is_a_probe_error():
    with pytest.raises(idle.ProbeError):
        idle.activity_from({"last_activity": "yesterday"}, [], [])
    with pytest.raises(idle.ProbeError):
        idle.activity_from({"last_activity": iso(T0)}, {"not": "a list"}, [])


# -- the setting ----------------------------------------------------------------------------------------------------


def test_idle_timeout_setting():
    assert parse_idle_timeouts(None) == {"cpu": 3 * H, "gpu": H}
    assert parse_idle_timeouts({"cpu": "90m", "gpu": None}) == {"cpu": 90 * M, "gpu": None}
    assert parse_idle_timeouts({"gpu": 45}) == {"cpu": 3 * H, "gpu": 45}
    for bad, needle in (
        ({"tpu": "1h"}, "unknown runtime kind 'tpu'"),
        ({"gpu": "soon"}, "policy.idle_timeout.gpu: invalid duration 'soon'"),
        ({"cpu": 0}, "policy.idle_timeout.cpu: must be greater than zero"),
        ("3h", "expected a mapping"),
    ):
        with pytest.raises(ValueError, match=needle):
            parse_idle_timeouts(bad)


def test_guard_config_refuses_a_bad_idle_timeout(env):
    env.data["policy"]["idle_timeout"] = {"gpu": "-5m"}
    with pytest.raises(ConfigError, match="policy.idle_timeout.gpu"):
        parse_config(env.data)
    env.data["policy"]["idle_timeout"] = {"gpu": None}
    assert parse_config(env.data).idle_timeout == {"cpu": 3 * H, "gpu": None}


def test_role_filter_names_the_setting():
    from ansible_collections.metalab.lab.plugins.filter.guard import guard_policy_errors

    errors = guard_policy_errors({"limits": {"cpu": "12h"}, "idle_timeout": {"cpu": "3 hours"}})
    assert len(errors) == 1 and errors[0].startswith("lab_session_idle_timeout.cpu: invalid duration '3 hours'")
    assert guard_policy_errors({"limits": {"cpu": "12h"}, "idle_timeout": {"cpu": "3h", "gpu": None}}) == []


# -- a JupyterLab on a unix socket ------------------------------------------------------------------------------------


class FakeJupyter:
    """A real HTTP server on a unix socket answering like jupyter_server; records what it was asked."""

    def __init__(self, path: str, token: str, base: str) -> None:
        self.token = token
        self.base = base.rstrip("/")
        self.requests: List[Tuple[str, Optional[str]]] = []
        self.answers: Dict[str, Tuple[int, Any]] = {}
        self.trickle = 0.0  # seconds between the bytes of an answer (a JupyterLab that stalls the guard)
        self.set(last=T0)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"token {fake.token}":
                    code, body = 403, {"message": "Forbidden"}
                else:
                    code, body = fake.answers.get(self.path, (404, {"message": "Not found"}))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not fake.trickle:
                    self.wfile.write(data)
                    return
                for byte in data:
                    time.sleep(fake.trickle)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(
        self, last: float, kernels: Optional[List[Dict[str, Any]]] = None, terminals: Optional[List[Any]] = None
    ) -> None:
        kernels = kernels or []
        status = {
            "started": iso(T0),
            "last_activity": iso(last),
            "kernels": len(kernels),
            "connections": sum(k.get("connections", 0) for k in kernels),
        }
        self.answers = {
            f"{self.base}/api/status": (200, status),
            f"{self.base}/api/kernels?no_track_activity=1": (200, kernels),
            f"{self.base}/api/terminals?no_track_activity=1": (200, terminals or []),
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="idle", dir="/tmp")  # unix socket paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_probe_asks_without_counting_as_activity(short_dir):
    fake = FakeJupyter(os.path.join(short_dir, "jupyter.sock"), "s3cret", "/user/alice/")
    try:
        fake.set(last=T0 + 5 * M, kernels=[{"id": "k", "execution_state": "busy", "last_activity": iso(T0)}])
        got = idle.probe(os.path.join(short_dir, "jupyter.sock"), "/user/alice/", "s3cret")
        assert got == Activity(pytest.approx(T0 + 5 * M, abs=1), True, 0)
        assert fake.requests == [
            ("/user/alice/api/status", "token s3cret"),  # /api/status never counts as activity
            ("/user/alice/api/kernels?no_track_activity=1", "token s3cret"),
            ("/user/alice/api/terminals?no_track_activity=1", "token s3cret"),
        ]
        with pytest.raises(idle.ProbeError, match="403"):  # a wrong token: unknown, not idle
            idle.probe(os.path.join(short_dir, "jupyter.sock"), "/user/alice/", "wrong")
        del fake.answers["/user/alice/api/terminals?no_track_activity=1"]  # terminals disabled: 404
        assert idle.probe(os.path.join(short_dir, "jupyter.sock"), "/user/alice/", "s3cret").busy
    finally:
        fake.close()
    with pytest.raises(idle.ProbeError, match="no runtime token"):
        idle.probe_runtime(short_dir, short_dir, "alice", os.getuid())
    with pytest.raises(idle.ProbeError):  # nothing listening
        idle.probe(os.path.join(short_dir, "jupyter.sock"), "/user/alice/", "s3cret")
    with pytest.raises(idle.ProbeError):  # no socket at all
        idle.probe(os.path.join(short_dir, "none.sock"), "/user/alice/", "s3cret")


def test_probe_talks_only_to_a_listener_of_the_runtimes_uid(short_dir):
    # The socket directory is the user's: a link there to a socket of root's (the broker's, podman's) must not get
    # root's guard talking to it.
    sock = os.path.join(short_dir, "jupyter.sock")
    fake = FakeJupyter(sock, "s3cret", "/user/alice/")
    try:
        assert idle.probe(sock, "/user/alice/", "s3cret", uid=os.getuid()).last_activity == pytest.approx(T0, abs=1)
        with pytest.raises(idle.ProbeError, match="does not run as uid"):
            idle.probe(sock, "/user/alice/", "s3cret", uid=os.getuid() + 1)
        assert fake.requests == [(p, "token s3cret") for p in (
            "/user/alice/api/status", "/user/alice/api/kernels?no_track_activity=1",
            "/user/alice/api/terminals?no_track_activity=1")]  # fmt: skip
    finally:
        fake.close()


def test_a_stalling_jupyterlab_cannot_hold_the_guard(short_dir):
    sock = os.path.join(short_dir, "jupyter.sock")
    fake = FakeJupyter(sock, "s3cret", "/user/alice/")
    try:
        fake.trickle = 0.2  # a byte every 0.2 s: each read is quick, the whole answer is not
        began = time.monotonic()
        with pytest.raises(idle.ProbeError, match="timed out|in time"):
            idle.probe(sock, "/user/alice/", "s3cret", timeout=1.0)
        assert time.monotonic() - began < 2.0
    finally:
        fake.close()


def test_an_endless_answer_is_cut_off(short_dir, monkeypatch):
    monkeypatch.setattr(idle, "MAX_ANSWER", 100)
    sock = os.path.join(short_dir, "jupyter.sock")
    fake = FakeJupyter(sock, "s3cret", "/user/alice/")
    try:
        fake.answers["/user/alice/api/status"] = (200, {"last_activity": iso(T0), "padding": "x" * 200})
        with pytest.raises(idle.ProbeError, match="larger than 100 bytes"):
            idle.probe(sock, "/user/alice/", "s3cret")
    finally:
        fake.close()


# -- the guard run --------------------------------------------------------------------------------------------------


@pytest.fixture
def idle_env(env: Env, short_dir: str, monkeypatch) -> Env:
    env.data["runtime"]["socket_root"] = short_dir
    env.data["policy"]["idle_timeout"] = {"cpu": "1h", "gpu": "30m"}
    env.write()
    # The fake JupyterLabs run as this test's uid, not as the users' (2001...): answer SO_PEERCRED as the runtime's.
    uids = {name: user["uid"] for name, user in env.data["users"].items()}
    monkeypatch.setattr(idle, "_peer_uid", lambda sock: uids[os.path.basename(os.path.dirname(sock.getpeername()))])
    return env


def jupyter_for(env: Env, user: str) -> FakeJupyter:
    token = (Path(env.data["runtime"]["token_dir"]) / user).read_text().strip()
    return FakeJupyter(os.path.join(env.data["runtime"]["socket_root"], user, "jupyter.sock"), token, f"/user/{user}/")


def test_guard_warns_then_stops_an_idle_runtime(idle_env):
    lab = idle_env.lab()
    assert lab.start("bob", "cpu", T0)["idle_timeout_seconds"] == H
    fake = jupyter_for(idle_env, "bob")
    notice = idle_env.tmp / "home" / "bob" / ".metalab" / "session-notice.txt"
    try:
        fake.set(last=T0 + 10 * M)  # bob used it for ten minutes, then left
        assert lab.run(T0 + 50 * M).warned == []
        assert lab.status(T0 + 50 * M)[0]["idle_stop_at"] == format_iso(T0 + 70 * M)  # 10m + 1h, to the second
        report = lab.run(T0 + 56 * M)  # 14 minutes before the idle stop: the 15-minute warning
        assert report.warned == ["bob"] and report.stopped == []
        text = notice.read_text()
        assert "is idle and stops in 14m" in text and "Any activity keeps it running" in text
        assert lab.run(T0 + 57 * M).warned == []  # each warning once per idle period
        assert lab.run(T0 + 66 * M).warned == ["bob"]  # 5 minutes
        # Idle warnings are not written to the terminals (that output would count as activity), and they are not
        # the deadline's warnings: the session limit's own warnings still come.
        assert idle_env.sim.containers()["metalab-bob"]["messages"] == []
        assert lab.ledger.get(1).warnings_sent == []
        events = lab.ledger.events(1, "warned")
        assert [e["detail"]["reason"] for e in events] == ["idle", "idle"]
        report = lab.run(T0 + 71 * M)
        assert report.stopped == [("bob", "idle")]
        assert report.as_dict()["stopped"] == [{"user": "bob", "reason": "idle"}]  # `metalab-guard run --json`
        row = lab.ledger.get(1)
        assert (row.state, row.end_reason, row.ended) == ("ended", "idle", T0 + 71 * M)
        assert idle_env.sim.containers().get("metalab-bob", {}).get("state") != "running"
    finally:
        fake.close()


def test_activity_keeps_a_runtime_and_restarts_the_warnings(idle_env):
    lab = idle_env.lab()
    lab.start("bob", "cpu", T0)
    fake = jupyter_for(idle_env, "bob")
    try:
        fake.set(last=T0)
        assert lab.run(T0 + 50 * M).warned == ["bob"]
        # A cell running time.sleep: no output, but the kernel is busy. Long past the timeout, nothing stops it.
        fake.set(last=T0 + 51 * M, kernels=[{"id": "k", "execution_state": "busy", "last_activity": iso(T0 + 51 * M)}])
        for minute in (70, 200, 400):
            report = lab.run(T0 + minute * M)
            assert report.stopped == [] and report.warned == []
        # An open notebook (a kernel connection), idle kernel: still active.
        fake.set(last=T0, kernels=[{"id": "k", "execution_state": "idle", "last_activity": iso(T0), "connections": 1}])
        assert lab.run(T0 + 500 * M).stopped == []
        # Left alone after that: idle again, warned again (a new idle period), stopped an hour after its last
        # reported activity.
        fake.set(last=T0 + 500 * M)
        assert lab.run(T0 + 546 * M).warned == ["bob"]
        assert lab.run(T0 + 561 * M).stopped == [("bob", "idle")]
    finally:
        fake.close()


def test_runtime_that_does_not_answer_is_never_stopped_for_idleness(idle_env):
    lab = idle_env.lab()
    lab.start("alice", "gpu", T0)
    report = lab.run(T0 + 3 * H)  # no JupyterLab listening: activity unknown
    assert report.stopped == [] and report.warned == []
    assert lab.status(T0 + 3 * H)[0]["idle_stop_at"] is None
    assert lab.status(T0 + 3 * H)[0]["idle_timeout_seconds"] == 30 * M
    assert lab.run(T0 + 4 * H).stopped == [("alice", "limit")]  # the session limit still applies


def test_null_idle_timeout_keeps_an_idle_runtime(idle_env):
    idle_env.data["policy"]["idle_timeout"] = {"cpu": None}
    idle_env.write()
    lab = idle_env.lab()
    lab.start("bob", "cpu", T0)
    fake = jupyter_for(idle_env, "bob")
    try:
        fake.set(last=T0)
        assert lab.run(T0 + 11 * H).stopped == []
        described = lab.status(T0 + 11 * H)[0]
        assert (described["idle_timeout_seconds"], described["idle_stop_at"]) == (None, None)
    finally:
        fake.close()


def test_no_idle_warnings_while_she_works_even_with_a_short_timeout(idle_env):
    # A 10-minute idle timeout with the 15m/5m warnings: the 15-minute one would come due at every run while she
    # works, so only the 5-minute one is sent, and only once she is idle.
    idle_env.data["policy"]["idle_timeout"] = {"cpu": "10m"}
    idle_env.write()
    lab = idle_env.lab()
    lab.start("bob", "cpu", T0)
    fake = jupyter_for(idle_env, "bob")
    notice = idle_env.tmp / "home" / "bob" / ".metalab" / "session-notice.txt"
    try:
        for minute in range(1, 30):  # typing in a terminal every minute; a busy kernel half of the time
            busy = [{"id": "k", "execution_state": "busy", "last_activity": iso(T0)}] if minute % 2 else []
            fake.set(last=T0 + minute * M - 20, kernels=busy, terminals=[])
            report = lab.run(T0 + minute * M)
            assert report.warned == [] and report.stopped == [], minute
        assert not notice.exists()
        fake.set(last=T0 + 29 * M)  # then she leaves
        assert lab.run(T0 + 33 * M).warned == []
        assert lab.run(T0 + 35 * M).warned == ["bob"]  # 4 minutes left
        assert "stops in 4m" in notice.read_text()
        assert lab.run(T0 + 40 * M).stopped == [("bob", "idle")]
    finally:
        fake.close()


def test_asking_a_stalling_jupyterlab_does_not_hold_the_guard_lock(idle_env):
    """The guard run asks the runtimes before it takes the lock: while bob's JupyterLab trickles its answer out
    (up to the probe's 5 s deadline), alice's start goes through at once."""
    lab = idle_env.lab()
    lab.start("bob", "cpu", T0)
    fake = jupyter_for(idle_env, "bob")
    fake.trickle = 0.2
    box: Dict[str, Any] = {}

    def guard_run() -> None:
        config = parse_config(idle_env.data, str(idle_env.path))  # its own SQLite connection, in its own thread,
        runner = Lab(config, engine=PodmanEngine(config.runtime, runner=idle_env.sim))  # like a second process
        box["report"] = runner.run(T0 + 10 * M)
        runner.close()

    thread = threading.Thread(target=guard_run, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.requests, "the guard run never asked bob's JupyterLab"
        began = time.monotonic()
        assert lab.start("alice", "cpu", T0 + 10 * M)["user"] == "alice"
        assert time.monotonic() - began < 2.5 and thread.is_alive(), "alice's start waited for the probe"
        thread.join(15)
        assert box["report"].stopped == []  # bob's activity unknown (the probe timed out): never idle
    finally:
        fake.close()
