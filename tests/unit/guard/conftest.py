"""Fixtures for the guard tests: a config in a temp dir, a Lab over the simulated podman (test support)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from guard_config import guard_config
from simulated_podman import WITH_SIMULATED_PODMAN, SimulatedPodman

from metalab.host.guard.config import parse_config
from metalab.host.guard.engine import PodmanEngine
from metalab.host.guard.sessions import Lab

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
H = 3600
SRC = str(Path(__file__).resolve().parents[3] / "src")


def base_config(tmp: Path) -> Dict[str, Any]:
    data = guard_config(tmp, (("alice", True), ("bob", False), ("carol", True), ("dave", True)), 2001)
    data.update(
        metrics_path=str(tmp / "metalab.prom"),
        drain_file=str(tmp / "drain"),  # never the machine's /etc/metalab/drain
        usage={"file": str(tmp / "usage.json")},  # nor its /var/lib/metalab/usage.json
    )
    data["policy"]["warnings"] = ["15m", "5m"]
    data["runtime"].update(
        image="localhost/metalab-runtime:test",
        resources={"cpu": {"cpus": 4, "memory": "16g", "pids": 4096}, "gpu": {"cpus": 8, "memory": "32g"}},
        socket_dir_size="",  # no tmpfs mounts from unit tests (they run as root in make test)
        env={"HTTPS_PROXY": "http://proxy.example:3128"},
    )
    return data


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
