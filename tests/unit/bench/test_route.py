"""The route section of benchmarks/run.py (benchmarks/route_bench.py): its arguments, the interleaving, the figures
and ratios it reports, and the controller's client against a stand-in JupyterLab on loopback."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture(scope="module")
def rb(load_bench):
    return load_bench("route_bench")


# -- arguments ----------------------------------------------------------------------------------------------------


def test_route_sandboxes_are_two_different_names_front_door_first(run):
    assert run.route_sandboxes("rt1,rt2") == ("rt1", "rt2")
    assert run.route_sandboxes(" bm2 , bm1 ") == ("bm2", "bm1")
    for bad in ("rt1", "rt1,rt1", "a,b,c", "", "rt1,RT 2", "rt1,../x"):
        with pytest.raises(ValueError):
            run.route_sandboxes(bad)


def test_route_counts_quick_takes_fewer_samples_and_explicit_counts_win(run):
    assert run.route_counts(False, None, None) == (1000, 100)
    assert run.route_counts(True, None, None) == (50, 10)
    assert run.route_counts(True, 7, 3) == (7, 3)
    with pytest.raises(ValueError):
        run.route_counts(False, 0, 5)


def test_route_is_a_section_of_the_default_run_and_bad_route_arguments_stop_before_anything_runs(run, capsys):
    assert "route" in run.SECTIONS
    for argv in (["--only", "route", "--route-sandboxes", "bm1"], ["--only", "route", "--route-transfers", "0"]):
        with pytest.raises(SystemExit) as exc:
            run.main(argv)
        assert exc.value.code == 2
        assert "route:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.main(["--only", "routes"])
    assert "unknown section(s) routes" in capsys.readouterr().err


def test_the_route_inventory_homes_alice_on_the_front_door_and_bob_on_the_other_host(run, tmp_path):
    data = json.loads(run.route_inventory(tmp_path, "rt1", "rt2").read_text())
    assert data["all"]["children"] == {"lab_frontdoor": {"hosts": {"rt1": None}}}
    lab = data["all"]["vars"]
    assert [(u["name"], u["host"]) for u in lab["lab_users"]] == [("alice", "rt1"), ("bob", "rt2")]
    assert lab["lab_homes_device"] == "none" and lab["runtime_image_base_from_host"] is True


# -- interleaving and figures -------------------------------------------------------------------------------------


def test_rounds_interleave_the_sides_and_alternate_which_goes_first(rb):
    plan = rb.schedule({"api": 4, "file": 2})
    assert plan[:4] == [(0, "api", "local"), (0, "api", "remote"), (0, "file", "local"), (0, "file", "remote")]
    assert plan[4:8] == [(1, "api", "remote"), (1, "api", "local"), (1, "file", "remote"), (1, "file", "local")]
    for kind, n in (("api", 4), ("file", 2)):
        for side in rb.SIDES:
            assert sum(1 for _, k, s in plan if (k, s) == (kind, side)) == n
    api = [side for _, kind, side in plan if kind == "api"]
    assert [api[i] for i in range(0, len(api), 2)] == ["local", "remote", "local", "remote"]  # who goes first


def test_route_result_reports_medians_p95_every_sample_and_the_ratio_of_remote_to_local(run):
    local = [0.010, 0.011, 0.012, 0.013, 0.050]
    remote = [0.020, 0.021, 0.024, 0.026, 0.060]
    raw = {
        "samples": {"api_status": {"local": local, "remote": remote}, "file_4MiB": {"local": [0.1], "remote": [0.2]}},
        "sizes": {"api_status": 0, "file_4MiB": 4 * 2**20},
        "users": {"local": "alice", "remote": "bob"},
        "connects": {"local": 1, "remote": 1},
    }
    sec = run.route_result(raw, {"local": "rt1", "remote": "rt2"})
    api_local, api_remote, file_local, file_remote = sec["cases"]
    assert (api_local["median_s"], api_local["p95_s"], api_local["n"]) == (0.012, 0.050, 5)
    assert api_remote["runs"] == remote and api_remote["host"] == "rt2" and api_remote["user"] == "bob"
    assert file_local["mib_per_s_median"] == 40.0 and file_remote["mib_per_s_median"] == 20.0
    api, transfer = sec["ratios"]
    assert api["median_ratio"] == 2.0 and api["p95_ratio"] == 1.2 and api["added_ms_median"] == 12.0
    assert api["paired_median_ratio"] == 2.0  # 2.0, 1.909, 2.0, 2.0, 1.2
    assert transfer["median_ratio"] == 2.0 and transfer["n"] == 1
    assert "samples" not in sec["raw"] and sec["raw"]["connects"] == {"local": 1, "remote": 1}
    with pytest.raises(run.BenchError):
        run.route_result(dict(raw, samples={"api_status": {"local": [], "remote": [0.1]}}), sec["hosts"])


# -- the client against a stand-in JupyterLab ---------------------------------------------------------------------


class FakeLab(BaseHTTPRequestHandler):
    """/user/<name>/api/status, PUT api/contents/<file>, GET files/<file>; each user's token required."""

    protocol_version = "HTTP/1.1"  # kept-alive connections, as nginx gives
    tokens = {"alice": "tok-a", "bob": "tok-b"}
    files: dict = {}
    corrupt: set = set()
    requests: list = []

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _user(self):
        parts = self.path.split("/", 3)  # '', 'user', name, rest
        if len(parts) < 4 or parts[1] != "user" or parts[2] not in self.tokens:
            return None, ""
        if self.headers.get("Authorization") != f"token {self.tokens[parts[2]]}":
            return None, ""
        return parts[2], parts[3]

    def do_GET(self):
        user, rest = self._user()
        self.requests.append((user, rest))
        if user is None:
            return self._answer(403, b"forbidden")
        if rest == "api/status":
            return self._answer(200, b'{"started": "2026-11-30T22:00:00Z", "connections": 0}')
        if rest.startswith("files/") and (user, rest[6:]) in self.files:
            data = self.files[(user, rest[6:])]
            return self._answer(200, data[:-1] if user in self.corrupt else data)
        return self._answer(404, b"not found")

    def do_PUT(self):
        user, rest = self._user()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if user is None or not rest.startswith("api/contents/"):
            return self._answer(403, b"forbidden")
        self.files[(user, rest[len("api/contents/") :])] = base64.b64decode(json.loads(body)["content"])
        return self._answer(201, b"{}")


@pytest.fixture
def fake_lab():
    FakeLab.files, FakeLab.corrupt, FakeLab.requests = {}, set(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLab)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_measures_both_users_interleaved_over_one_kept_alive_connection_each(rb, fake_lab):
    users = {"local": ("alice", "tok-a"), "remote": ("bob", "tok-b")}
    raw = rb.route("127.0.0.1", fake_lab, users, api_n=6, file_n=2, warmup=1, tls=False)
    assert {k: {s: len(v) for s, v in sides.items()} for k, sides in raw["samples"].items()} == {
        "api_status": {"local": 6, "remote": 6},
        "file_4MiB": {"local": 2, "remote": 2},
    }
    assert all(t > 0 for sides in raw["samples"].values() for v in sides.values() for t in v)
    assert raw["connects"] == {"local": 1, "remote": 1} and raw["retries"] == {"local": 0, "remote": 0}
    assert raw["users"] == {"local": "alice", "remote": "bob"} and raw["sizes"]["file_4MiB"] == 4 * 2**20
    assert FakeLab.files[("alice", rb.FILE_NAME)] == FakeLab.files[("bob", rb.FILE_NAME)] == rb.payload()
    measured = FakeLab.requests[-16:]  # the samples (before them: readiness polls and warm-up)
    assert [u for u, _ in measured[:4]] == ["alice", "bob", "alice", "bob"]  # round 0: local first
    assert [u for u, _ in measured[4:8]] == ["bob", "alice", "bob", "alice"]  # round 1: remote first
    assert raw["loadavg_1min"] and all(len(p) == 2 for p in raw["loadavg_1min"])


def test_a_wrong_answer_is_no_sample(rb, fake_lab):
    FakeLab.corrupt.add("bob")  # bob's file comes back one byte short
    users = {"local": ("alice", "tok-a"), "remote": ("bob", "tok-b")}
    with pytest.raises(rb.RouteError, match=r"file_4MiB for remote \(bob\): 4194303 bytes"):
        rb.route("127.0.0.1", fake_lab, users, api_n=2, file_n=2, warmup=1, tls=False)
    FakeLab.corrupt.clear()
    # A token that is not his: no 200 from api/status, so no measurement at all.
    with pytest.raises(rb.RouteError, match="bob: api/status gave no 200"):
        client = rb.Client("127.0.0.1", fake_lab, "bob", "tok-a", tls=False)
        rb.wait_ready(client, give_up_s=0.3, poll_s=0.1)


def test_the_payload_does_not_compress(rb):
    import zlib

    data = rb.payload()
    assert len(data) == 4 * 2**20 and data == rb.payload()
    assert len(zlib.compress(data)) > 0.99 * len(data)
