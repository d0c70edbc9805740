"""Fixtures for the guard tests: a config in a temp dir, a Lab over the simulated podman (test support)."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from simulated_podman import WITH_SIMULATED_PODMAN, SimulatedPodman

from metalab.host.guard.config import parse_config
from metalab.host.guard.engine import PodmanEngine
from metalab.host.guard.sessions import Lab

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
H = 3600
SRC = str(Path(__file__).resolve().parents[3] / "src")


def base_config(tmp: Path) -> Dict[str, Any]:
    users = {}
    for i, (name, gpu) in enumerate((("alice", True), ("bob", False), ("carol", True), ("dave", True))):
        home = tmp / "home" / name
        home.mkdir(parents=True)
        users[name] = {"uid": 2001 + i, "gid": 2001 + i, "home": str(home), "gpu": gpu}
    return {
        "ledger": str(tmp / "state" / "ledger.sqlite"),
        "lock": str(tmp / "run" / "guard.lock"),
        "host": "lab1",
        "log_file": str(tmp / "guard.log"),
        "metrics_path": str(tmp / "metalab.prom"),
        "lock_timeout": 5,
        "drain_file": str(tmp / "drain"),  # never the machine's /etc/metalab/drain
        "users": users,
        "policy": {"limits": {"cpu": "12h", "gpu": "4h"}, "warnings": ["15m", "5m"]},
        "runtime": {
            "image": "localhost/metalab-runtime:test",
            "resources": {"cpu": {"cpus": 4, "memory": "16g", "pids": 4096}, "gpu": {"cpus": 8, "memory": "32g"}},
            "socket_root": str(tmp / "sockets"),
            "frontdoor_group": grp.getgrgid(os.getgid()).gr_name,
            "token_dir": str(tmp / "tokens"),
            "socket_dir_size": "",  # no tmpfs mounts from unit tests (they run as root in make test)
            "env_dir": str(tmp / "envdir"),
            "env": {"HTTPS_PROXY": "http://proxy.example:3128"},
            "gpus": [0, 1],
        },
    }


class Env:
    """A lab on disk: config data, the config file, the simulated podman and Lab objects over them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = base_config(tmp)
        self.path = tmp / "guard.json"
        self.state = tmp / "podman.json"
        self.sim = SimulatedPodman(str(self.state))
        self._labs: List[Lab] = []
        self.write()

    def write(self) -> None:
        self.path.write_text(json.dumps(self.data))

    def lab(self) -> Lab:
        config = parse_config(self.data, str(self.path))
        lab = Lab(config, engine=PodmanEngine(config.runtime, runner=self.sim))
        self._labs.append(lab)
        return lab

    def cli(self, *args: str, now: float = T0) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=SRC, METALAB_GUARD_CONFIG=str(self.path))
        return subprocess.run(
            [
                sys.executable,
                WITH_SIMULATED_PODMAN,
                str(self.state),
                "-m",
                "metalab.host.guard.cli",
                "--now",
                repr(now),
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def close(self) -> None:
        for lab in self._labs:
            lab.close()


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = Env(tmp_path)
    yield e
    e.close()


@pytest.fixture
def lab(env: Env) -> Lab:
    return env.lab()


Factory = Callable[..., Lab]
