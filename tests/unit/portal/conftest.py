"""Fixtures for the portal tests: a guard config over the simulated podman, the broker serving for real on a unix
socket, and the Flask app (its test client) talking to that broker."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from guard_config import guard_config
from simulated_podman import SimulatedPodman, use_simulated_podman

from metalab.brokerapi.client import BrokerClient
from metalab.host.broker.auth import AuthStore
from metalab.host.broker.config import BrokerConfig, parse_config
from metalab.host.broker.server import BrokerServer, serve_in_thread
from metalab.host.guard.config import parse_config as parse_guard_config
from metalab.host.guard.engine import PodmanEngine
from metalab.host.guard.sessions import Lab
from metalab.portal.app import create_app
from metalab.portal.settings import Settings

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333"}
BASE = "https://lab.test"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def guard_data(tmp: Path) -> Dict[str, Any]:
    return guard_config(tmp, (("alice", True), ("bob", False), ("carol", True)), 3001)


class LabEnv:
    """Guard config + broker (serving on a real unix socket) + portal app, all under one temp dir."""

    def __init__(self, tmp: Path, sockdir: str) -> None:
        self.tmp = tmp
        self.guard = guard_data(tmp)
        self.guard_path = tmp / "guard.json"
        self.state = tmp / "podman.json"
        self.sim = SimulatedPodman(str(self.state), jupyter_sockets=self.guard["runtime"]["socket_root"])
        self.broker_data: Dict[str, Any] = {
            "socket": os.path.join(sockdir, "broker.sock"),
            "socket_group": None,
            "clients": [os.getuid()],
            "guard_config": str(self.guard_path),
            "passwords": str(tmp / "etc" / "passwords.json"),
            "state": str(tmp / "lib" / "state.json"),
            "key": str(tmp / "etc" / "broker.key"),
            "admins": ["carol"],
            "scrypt": {"n": 2**14},  # fast enough for tests; production uses 2**17
            "lockout_failures": 5,
            "lockout": "15m",
        }
        self.server: Optional[BrokerServer] = None
        self.write_guard()

    def write_guard(self) -> None:
        self.guard_path.write_text(json.dumps(self.guard))

    @property
    def broker_config(self) -> BrokerConfig:
        return parse_config(self.broker_data, "<test>")

    def start_broker(self) -> None:
        self.stop_broker()
        config = self.broker_config
        if not os.path.exists(config.passwords):
            store = AuthStore(config)
            for user, password in PASSWORDS.items():
                store.set_password(user, password)
        self.server, _ = serve_in_thread(config)

    def stop_broker(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def client(self) -> BrokerClient:
        return BrokerClient(self.broker_data["socket"], timeout=30)

    def lab(self) -> Lab:
        config = parse_guard_config(self.guard, str(self.guard_path))
        return Lab(config, engine=PodmanEngine(config.runtime, runner=self.sim))

    def app(self):  # type: ignore[no-untyped-def]
        settings = Settings(
            broker_socket=self.broker_data["socket"], secret_key_file=str(self.tmp / "portal" / "secret_key")
        )
        return create_app(settings)

    def browser(self) -> Browser:
        return Browser(self.app().test_client())

    def ticket(self, user: str) -> str:
        return str(self.client().call("login", user=user, password=PASSWORDS[user])["ticket"])


class Browser:
    """A Flask test client that behaves like a browser on the lab's HTTPS origin (Referer on posts, CSRF token)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, base_url=BASE, **kw)

    def csrf(self, path: str = "/login") -> str:
        page = self.get(path).get_data(as_text=True)
        match = CSRF.search(page)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(self, path: str, data: Optional[Dict[str, str]] = None, csrf_from: Optional[str] = "/", **kw: Any) -> Any:
        form = dict(data or {})
        if csrf_from is not None:
            form.setdefault("csrf_token", self.csrf(csrf_from))
        return self.client.post(path, data=form, base_url=BASE, headers={"Referer": BASE + "/"}, **kw)

    def login(self, user: str, password: Optional[str] = None) -> Any:
        return self.post("/login", {"username": user, "password": password or PASSWORDS[user]}, csrf_from="/login")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabEnv]:
    sockdir = tempfile.mkdtemp(prefix="mlb-", dir="/tmp")  # unix socket paths are limited to 108 bytes
    e = LabEnv(tmp_path, sockdir)
    use_simulated_podman(e.sim, monkeypatch)  # the broker's Labs
    e.start_broker()
    try:
        yield e
    finally:
        e.stop_broker()
        shutil.rmtree(sockdir, ignore_errors=True)


def wait_for(path: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(path)
        time.sleep(0.05)
