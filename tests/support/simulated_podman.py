"""A simulated podman for unit tests, CLI tests and benchmarks: test support, never shipped to a host.

It interprets the argv that ``PodmanEngine`` builds (run, stop, rm, ps, exec) against a JSON state file, so state
survives across processes (CLI tests run ``metalab-guard`` as a subprocess). It never starts anything.

Fault injection, set in the state file by tests:
- ``"kill_at": "<point>"`` SIGKILLs the calling process at that point: ``before-run``, ``after-run``,
  ``before-stop``, ``after-stop`` (a real ``kill -9``, used for the crash-consistency tests);
- ``"fail": ["run", ...]`` makes those subcommands fail with exit 125;
- ``"delay": {"ps": 1.0}`` sleeps before answering (used to overlap two guard runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from typing import Any, Dict, List, Optional, Sequence

from metalab.host.guard.engine import PodmanEngine, Result


class SimulatedPodman:
    def __init__(self, state_path: str, record_calls: bool = True, jupyter_sockets: Optional[str] = None) -> None:
        """``jupyter_sockets``: the guard's socket_root; a started runtime then listens on its user's
        ``jupyter.sock`` there (in this process, until it is stopped), the way JupyterLab does."""
        self.path = state_path
        self.record_calls = record_calls
        self.jupyter_sockets = jupyter_sockets
        self._servers: Dict[str, socket.socket] = {}

    # -- state file -------------------------------------------------------------------------------------------

    def load(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                state: Dict[str, Any] = json.load(fh)
        except FileNotFoundError:
            state = {}
        state.setdefault("containers", {})
        state.setdefault("calls", [])
        return state

    def save(self, state: Dict[str, Any]) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, self.path)

    def update(self, **changes: Any) -> None:
        state = self.load()
        state.update(changes)
        self.save(state)

    def containers(self) -> Dict[str, Dict[str, Any]]:
        return dict(self.load()["containers"])

    def calls(self, sub: Optional[str] = None) -> List[List[str]]:
        calls: List[List[str]] = self.load()["calls"]
        return [c for c in calls if sub is None or (len(c) > 1 and c[1] == sub)]

    def crash(self, name: str) -> None:
        """The container's main process died: it is still there, exited."""
        state = self.load()
        state["containers"][name]["state"] = "exited"
        self.save(state)

    def vanish(self, name: str) -> None:
        """The container is gone altogether (removed behind our back, or a reboot)."""
        state = self.load()
        state["containers"].pop(name, None)
        self.save(state)

    def add_container(self, name: str, labels: Dict[str, str], state: str = "running") -> None:
        data = self.load()
        data["containers"][name] = {"labels": labels, "state": state, "env": {}, "argv": [], "messages": []}
        self.save(data)

    # -- the runner -------------------------------------------------------------------------------------------

    def _kill_point(self, state: Dict[str, Any], point: str) -> None:
        if state.get("kill_at") == point:
            state["kill_at"] = None  # the next process must get through
            self.save(state)
            os.kill(os.getpid(), signal.SIGKILL)

    def __call__(self, argv: Sequence[str], timeout: float) -> Result:
        args = list(argv)
        state = self.load()
        sub = args[1] if len(args) > 1 else ""
        delay = (state.get("delay") or {}).get(sub)
        if delay:
            time.sleep(float(delay))
        if self.record_calls:
            state["calls"].append(args)
        if sub in (state.get("fail") or []):
            self.save(state)
            return Result(125, "", f"Error: simulated {sub} failure")
        handler = getattr(self, "_" + sub, None)
        if handler is None:
            self.save(state)
            return Result(125, "", f"Error: unknown command {sub!r}")
        result: Result = handler(state, args[2:])
        self.save(state)
        return result

    @staticmethod
    def _value(args: List[str], flag: str) -> Optional[str]:
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return None

    def _run(self, state: Dict[str, Any], args: List[str]) -> Result:
        self._kill_point(state, "before-run")
        name = self._value(args, "--name") or "unnamed"
        if name in state["containers"]:
            return Result(125, "", f'Error: the container name "{name}" is already in use')
        labels = {}
        for i, arg in enumerate(args):
            if arg == "--label":
                key, _, value = args[i + 1].partition("=")
                labels[key] = value
        env: Dict[str, str] = {}
        env_file = self._value(args, "--env-file")
        if env_file:
            with open(env_file, encoding="utf-8") as fh:
                for line in fh:
                    key, _, value = line.rstrip("\n").partition("=")
                    env[key] = value
        state["containers"][name] = {"labels": labels, "state": "running", "env": env, "argv": args, "messages": []}
        self.save(state)
        if self.jupyter_sockets and labels.get("metalab.user"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = os.path.join(self.jupyter_sockets, labels["metalab.user"], "jupyter.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            server.bind(path)
            server.listen(8)
            self._servers[name] = server
        self._kill_point(state, "after-run")
        return Result(0, f"{abs(hash(name)):064x}\n", "")

    def _stop(self, state: Dict[str, Any], args: List[str]) -> Result:
        self._kill_point(state, "before-stop")
        name = args[-1]
        self._close_server(name)
        if name in state["containers"]:
            state["containers"][name]["state"] = "exited"
            state.setdefault("stopped", []).append(name)
        elif "--ignore" not in args:
            return Result(125, "", f"Error: no container with name or ID {name!r} found: no such container")
        self.save(state)
        self._kill_point(state, "after-stop")
        return Result(0, name + "\n", "")

    def _close_server(self, name: str) -> None:
        server = self._servers.pop(name, None)
        if server is not None:
            server.close()

    def _rm(self, state: Dict[str, Any], args: List[str]) -> Result:
        name = args[-1]
        self._close_server(name)
        if state["containers"].pop(name, None) is None and "--ignore" not in args:
            return Result(1, "", f"Error: no container with name or ID {name!r} found: no such container")
        return Result(0, name + "\n", "")

    def _ps(self, state: Dict[str, Any], args: List[str]) -> Result:
        items = [
            {"Names": [name], "State": c["state"], "Labels": c["labels"], "Id": f"{abs(hash(name)):064x}"}
            for name, c in sorted(state["containers"].items())
        ]
        return Result(0, json.dumps(items), "")

    def _exec(self, state: Dict[str, Any], args: List[str]) -> Result:
        # exec --user UID:GID NAME sh -c SCRIPT MESSAGE
        name = args[2]
        container = state["containers"].get(name)
        if container is None or container["state"] != "running":
            return Result(125, "", f"Error: container {name} is not running")
        container["messages"].append({"user": args[1], "argv": args[3:]})
        return Result(0, "", "")


# Runs a metalab command line in a process of its own over the simulated podman (see that file).
WITH_SIMULATED_PODMAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "with_simulated_podman.py")


def use_simulated_podman(sim: SimulatedPodman, monkeypatch: Any = None) -> None:
    """Make every Lab created from now on in this process drive ``sim`` (the guard's and the broker's); with a
    pytest ``monkeypatch``, only until the test ends."""
    from metalab.host.guard import sessions

    def make_engine(config):  # type: ignore[no-untyped-def]
        return PodmanEngine(config.runtime, runner=sim)

    if monkeypatch is None:
        sessions.make_engine = make_engine
    else:
        monkeypatch.setattr(sessions, "make_engine", make_engine)
