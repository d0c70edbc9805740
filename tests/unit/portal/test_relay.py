"""A multi-host lab's broker channel: the home host's adapter (metalab.host.broker.home) and the front door's relay
(metalab.host.broker.relay) against a local mutual-TLS server with certificates made here by openssl.

The TLS server stands in for the home host's internal nginx listener: it requires a client certificate from the lab
CA, serves only the front door's subject (anything else: 403, as nginx's map does), and hands the request to a real
HomeAdapter over the broker logic of a second guard config (host "home1", where bob is homed).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from guard_config import guard_config

from metalab.host.broker.config import BrokerConfigError, parse_config
from metalab.host.broker.errors import ApiError
from metalab.host.broker.home import AdapterConfig, HomeAdapter, HomeServer
from metalab.host.broker.relay import ChannelConfig, Home, HomeRelay
from metalab.host.broker.service import Broker

from .conftest import LabEnv

FRONT_SUBJECT = "front"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> Tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             str(key), "-out", str(cert), "-days", "2", "-subj", f"/O=metalab lab/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return key, cert


def _host(directory: Path, ca: Tuple[Path, Path], name: str) -> Tuple[Path, Path]:
    """A lab host certificate as roles/frontdoor's channel.yml makes it (server and client use, names in the SAN)."""
    key, cert = directory / f"{name}-{ca[1].stem}.key", directory / f"{name}-{ca[1].stem}.crt"
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             str(key), "-out", str(cert), "-days", "2", "-subj", f"/O=metalab lab/CN={name}",
             "-CA", str(ca[1]), "-CAkey", str(ca[0]),
             "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "keyUsage=critical,digitalSignature",
             "-addext", "extendedKeyUsage=serverAuth,clientAuth")  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    lab_ca, rogue_ca = _ca(d, "lab-ca"), _ca(d, "rogue-ca")
    return {
        "ca": lab_ca[1],
        "front": _host(d, lab_ca, FRONT_SUBJECT),  # the front door
        "home": _host(d, lab_ca, "home1"),  # the home host's server certificate
        "other": _host(d, lab_ca, "lab3"),  # another lab host: from the lab CA, but not a front door
        "rogue": _host(d, rogue_ca, FRONT_SUBJECT),  # the front door's name, but not from the lab CA
    }


class _Listener(BaseHTTPRequestHandler):
    """The internal nginx listener's rules: lab CA client certificate (TLS layer), front door subject only."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        peer = self.connection.getpeercert() or {}
        subject = dict(item for rdn in peer.get("subject", ()) for item in rdn)
        if subject.get("commonName") != FRONT_SUBJECT:
            status, answer = 403, None
        elif self.server.stalled.is_set():
            time.sleep(3)
            status, answer = 504, None
        else:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.server.seen.append(body)
            status, answer = self.server.adapter.handle(body)
        raw = b"<html>403 Forbidden</html>" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def home(env: LabEnv, pki: Dict[str, Any]) -> Iterator[Any]:
    """The home host: its own guard config (host home1: bob and dave) and broker logic, behind the TLS listener."""
    tmp = Path(tempfile.mkdtemp(prefix="mlh-", dir="/tmp"))
    guard = guard_config(tmp, (("bob", False), ("dave", False)), 4001)
    guard["host"] = "home1"
    guard["runtime"] = env.guard["runtime"]  # the one simulated podman's socket directory
    (tmp / "guard.json").write_text(json.dumps(guard))
    config = parse_config(dict(env.broker_data, guard_config=str(tmp / "guard.json"), socket=str(tmp / "b.sock"),
                               key=str(tmp / "broker.key"), state=str(tmp / "state.json")), "<home>")  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki["home"][1]), str(pki["home"][0]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.adapter = HomeAdapter(Broker(config))  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    server.stalled = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stalled.clear()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


def _channel(pki: Dict[str, Any], cert: str = "front", timeout: float = 2.0) -> Dict[str, Any]:
    return {"cert": str(pki[cert][1]), "key": str(pki[cert][0]), "ca": str(pki["ca"]), "timeout": timeout}


def _front_door(env: LabEnv, pki: Dict[str, Any], port: int, **channel: Any) -> None:
    """Make env's broker the front door: bob is homed on home1, reached on 127.0.0.1:PORT."""
    env.broker_data["homes"] = {"bob": {"host": "home1", "address": "127.0.0.1"}}
    env.broker_data["channel"] = dict(_channel(pki, **channel), port=port)
    env.start_broker()


# -- the home host's adapter --------------------------------------------------------------------------------------


def test_adapter_serves_the_four_ops_for_its_own_users(home: Any) -> None:
    adapter: HomeAdapter = home.adapter
    status, answer = adapter.handle({"op": "status", "user": "bob"})
    assert status == 200 and answer["ok"] and answer["result"]["user"] == "bob"
    assert answer["result"]["host"] == "home1" and answer["result"]["runtime"] is None
    assert adapter.handle({"op": "token", "user": "bob"})[1]["result"] == {"user": "bob", "token": None}
    started = adapter.handle({"op": "start", "user": "bob", "kind": "cpu"})[1]
    assert started["ok"] and started["result"]["state"] == "running", started
    token = adapter.handle({"op": "token", "user": "bob"})[1]["result"]["token"]
    assert isinstance(token, str) and len(token) > 16
    assert adapter.handle({"op": "stop", "user": "bob"})[1]["result"]["reason"] == "user"
    # A guard refusal comes back as the broker's own error, not as an HTTP failure.
    refused = adapter.handle({"op": "start", "user": "bob", "kind": "gpu"})
    assert refused[0] == 200 and refused[1]["error"]["code"] == "refused", refused


@pytest.mark.parametrize(
    ("request_", "status", "named"),
    [
        ({"op": "login", "user": "bob", "password": "x"}, 400, "'login' is not served"),
        ({"op": "admin.stop", "user": "bob", "target": "bob"}, 400, "'admin.stop' is not served"),
        ({"op": "status", "user": "alice"}, 403, "alice is not homed on this host"),  # a user of another host
        ({"op": "status", "user": "../etc"}, 400, "user: expected a lab user name"),
        ({"op": "status"}, 400, "user: expected"),
        ({"op": "status", "user": "bob", "ticket": "x"}, 400, "unexpected fields ['ticket']"),
        ({"op": "start", "user": "bob", "kind": "tpu"}, 400, "kind: expected cpu or gpu"),
        (["status", "bob"], 400, "expected a JSON object"),
    ],
)
def test_adapter_refuses_and_names_what_is_wrong(home: Any, request_: Any, status: int, named: str) -> None:
    got, answer = home.adapter.handle(request_)
    assert got == status and not answer["ok"] and named in answer["error"]["message"], answer
    assert home.adapter.handle({"op": "status", "user": "bob"})[0] == 200  # the same adapter serves bob


def _unix_http(path: str, method: str, url: str, body: bytes = b"") -> Tuple[int, Dict[str, Any]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request(method, url, body=body or None, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


def test_adapter_http_transport_serves_only_post_of_its_path(home: Any) -> None:
    sockdir = tempfile.mkdtemp(prefix="mla-", dir="/tmp")
    path = os.path.join(sockdir, "home.sock")
    server = HomeServer(AdapterConfig(socket=path), home.adapter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"  # no group given: root only
        ok = _unix_http(path, "POST", "/_metalab/broker", json.dumps({"op": "status", "user": "bob"}).encode())
        assert ok[0] == 200 and ok[1]["result"]["host"] == "home1"
        assert _unix_http(path, "POST", "/", b"{}")[0] == 404
        assert _unix_http(path, "GET", "/_metalab/broker")[0] == 405
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:  # a big body is refused before it is read
            raw.connect(path)
            raw.sendall(b"POST /_metalab/broker HTTP/1.0\r\nContent-Length: 5000\r\n\r\n")
            assert raw.makefile("rb").readline().split()[1] == b"413"
        bad = _unix_http(path, "POST", "/_metalab/broker", b"{not json")
        assert bad[0] == 400 and "unreadable request" in bad[1]["error"]["message"]
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(sockdir, ignore_errors=True)


# -- the front door's relay ---------------------------------------------------------------------------------------


def test_front_door_broker_asks_bobs_home_host_and_serves_alice_itself(env: LabEnv, pki: Any, home: Any) -> None:
    _front_door(env, pki, home.server_address[1])
    broker = env.client()
    bob = env.ticket("bob")
    status = broker.call("status", ticket=bob)
    assert status["host"] == "home1" and status["user"] == "bob"  # the home host's answer
    assert home.seen == [{"op": "status", "user": "bob"}]  # no ticket or password leaves the front door
    started = broker.call("start", ticket=bob, kind="cpu")
    assert started["state"] == "running"
    token = broker.call("token", ticket=bob)["token"]
    assert token and broker.call("token", ticket=bob)["token"] == token
    assert [r["op"] for r in home.seen].count("token") == 1  # nginx asks per request: reused for a few seconds
    assert broker.call("stop", ticket=bob)["reason"] == "user"
    assert broker.call("token", ticket=bob)["token"] is None  # a stop drops the reused token at once
    assert env.lab().status() == []  # nothing of bob ran on the front door
    alice = broker.call("status", ticket=env.ticket("alice"))
    assert alice["host"] == "lab1" and len(home.seen) == 5  # alice is served by the front door itself


def test_a_down_home_host_gives_a_clear_message_for_its_users_only(env: LabEnv, pki: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    _front_door(env, pki, port)
    broker = env.client()
    with pytest.raises(Exception) as info:
        broker.call("status", ticket=env.ticket("bob"))
    assert info.value.code == "unreachable"  # type: ignore[attr-defined]
    assert "bob's home host home1 is not reachable" in str(info.value)
    assert broker.call("status", ticket=env.ticket("alice"))["host"] == "lab1"
    # The portal shows it on bob's lab page.
    browser = env.browser()
    assert browser.login("bob").status_code in (302, 303)
    page = browser.get("/")
    assert page.status_code == 503 and "home host home1 is not reachable" in page.get_data(as_text=True)
    alice = env.browser()
    alice.login("alice")
    assert alice.get("/").status_code == 200


def test_a_home_host_that_hangs_costs_the_timeout_only(env: LabEnv, pki: Any, home: Any) -> None:
    _front_door(env, pki, home.server_address[1], timeout=1.0)
    home.stalled.set()
    began = time.monotonic()
    with pytest.raises(Exception) as info:
        env.client().call("status", ticket=env.ticket("bob"))
    assert info.value.code == "unreachable" and time.monotonic() - began < 2.5  # type: ignore[attr-defined]
    home.stalled.clear()
    assert env.client().call("status", ticket=env.ticket("bob"))["host"] == "home1"


def _relay(pki: Any, port: int, cert: str) -> HomeRelay:
    channel = ChannelConfig(**dict(_channel(pki, cert=cert), port=port))
    return HomeRelay(channel, {"bob": Home(host="home1", address="127.0.0.1")})


def test_the_listener_refuses_other_certificates_and_the_relay_refuses_a_foreign_server(pki: Any, home: Any) -> None:
    port = home.server_address[1]
    assert _relay(pki, port, "front").call("bob", "status")["host"] == "home1"  # the legitimate caller
    with pytest.raises(ApiError) as other:  # a lab host that is not a front door: the listener's 403
        _relay(pki, port, "other").call("bob", "status")
    assert other.value.code == "failure" and "refused the front door's certificate" in str(other.value)
    with pytest.raises(ApiError) as rogue:  # a client certificate from another CA: no TLS session at all
        _relay(pki, port, "rogue").call("bob", "status")
    assert rogue.value.code == "unreachable"
    foreign = ChannelConfig(cert=str(pki["front"][1]), key=str(pki["front"][0]), ca=str(pki["rogue"][1]), port=port)
    with pytest.raises(ApiError) as server:  # the front door trusts only the lab CA for the home host
        HomeRelay(foreign, {"bob": Home(host="home1", address="127.0.0.1")}).call("bob", "status")
    assert "certificate is not the lab's" in str(server.value)
    assert len(home.seen) == 1


def test_config_names_bad_channel_entries(env: LabEnv, pki: Any) -> None:
    base = dict(env.broker_data)
    good = dict(base, homes={"bob": {"host": "home1", "address": "10.0.0.2"}}, channel=_channel(pki))
    assert parse_config(good).homes["bob"] == Home("home1", "10.0.0.2")
    assert parse_config(base).homes == {} and parse_config(base).channel is None  # a single-host lab
    bad: List[Tuple[Dict[str, Any], str]] = [
        (dict(good, channel=None), "homes: users homed on other hosts need `channel`"),
        (dict(good, homes={"Bob!": {"host": "h", "address": "a"}}), "homes: 'Bob!' is not a user name"),
        (dict(good, homes={"bob": {"host": "h"}}), "homes.bob: expected {host, address}"),
        (dict(good, channel=dict(_channel(pki), cert="rel/x.crt")), "channel.cert: expected an absolute path"),
        (dict(good, channel=dict(_channel(pki), port=0)), "channel.port"),
        (dict(good, channel=dict(_channel(pki), timeout=600)), "channel.timeout"),
        (dict(base, home_adapter={"socket": "x.sock"}), "home_adapter.socket: expected an absolute path"),
    ]
    for data, named in bad:
        with pytest.raises(BrokerConfigError, match=named.replace("[", r"\[").replace("(", r"\(")):
            parse_config(data)


def test_the_front_doors_password_database_holds_users_homed_elsewhere(env: LabEnv, pki: Any, monkeypatch) -> None:
    from metalab.host.broker import cli

    env.broker_data["homes"] = {"dave": {"host": "home1", "address": "127.0.0.1"}}
    env.broker_data["channel"] = _channel(pki)
    path = env.tmp / "broker.json"
    path.write_text(json.dumps(env.broker_data))
    monkeypatch.setattr("sys.stdin", io.StringIO("dave-secret-4444\n"))
    assert cli.main(["--config", str(path), "passwd", "dave", "--stdin"]) == 0  # dave is no user of this host
    monkeypatch.setattr("sys.stdin", io.StringIO("erin-secret-4444\n"))
    assert cli.main(["--config", str(path), "passwd", "erin", "--stdin"]) != 0  # erin is no lab user at all
    env.start_broker()
    assert env.client().call("login", user="dave", password="dave-secret-4444")["user"] == "dave"
