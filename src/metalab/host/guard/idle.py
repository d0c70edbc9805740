"""Idle culling: ask a runtime's JupyterLab how active it is, and decide when the guard stops it for idleness.

Idleness comes from jupyter_server's own activity reports, read over the runtime's unix socket (the one the front
door proxies to) with the runtime's token:

- ``GET /api/status``: ``last_activity`` is jupyter_server's ``ServerApp.last_activity()``, the latest of: the
  server's start, the last kernel activity (any IOPub message of a kernel: output, status changes while it runs), every
  ``*_last_activity`` setting (``api_last_activity``: an authenticated API request, which an open, visible JupyterLab
  tab makes every few seconds as it polls; ``terminal_last_activity``: input to, or output shown in, a terminal
  with a browser attached) and extensions' ``last_activity_times``; ``connections`` is the number of kernel
  websockets (open notebooks and consoles).
- ``GET /api/kernels``: each kernel's ``execution_state`` (``busy`` while it runs code, even a silent
  ``time.sleep``), ``last_activity`` and ``connections``.
- ``GET /api/terminals``: each terminal's ``last_activity``.

``/api/status`` never counts as activity itself (its handler sets ``_track_activity = False``); the other two are
asked with ``?no_track_activity=1``, which jupyter_server's ``APIHandler.update_api_activity`` honours, so the
guard's own questions never keep a runtime alive.

A runtime is active *now* when a kernel is busy or a browser holds a kernel connection; otherwise it has been idle
since its latest activity, and never since before the runtime started (a runtime that nobody used is idle from its
start). A runtime that cannot be asked (not listening yet, just started, an error) is never treated as idle: the
guard does not stop on missing information.

Standard library only (the guard runs on the lab host without a virtualenv).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from metalab.host.guard import files

SOCKET_NAME = "jupyter.sock"  # inside SOCKET_ROOT/USER (runtime_image's jupyter_server_config: /run/lab/jupyter.sock)
PROBE_TIMEOUT = 5.0  # seconds for the three requests: a runtime that has not answered by then is unknown, not idle
MAX_ANSWER = 4 * 1024 * 1024  # bytes of one answer (a kernel list is a few hundred bytes per kernel)
STATE_FILE = "guard.idle.json"  # beside the ledger: the last probe of every running session (for status and warnings)


class ProbeError(Exception):
    """The runtime could not be asked (not listening, refused, bad answer)."""


@dataclass(frozen=True)
class Activity:
    """What JupyterLab reported: its latest activity (epoch seconds), busy kernels and browser connections."""

    last_activity: float
    busy: bool = False
    connections: int = 0


# -- the decision (pure) ---------------------------------------------------------------------------------------------


def idle_since(started: float, activity: Optional[Activity], now: float) -> Optional[float]:
    """Since when the runtime has been idle (``now`` if it is active now); None = unknown (never stopped for it)."""
    if activity is None:
        return None
    if activity.busy or activity.connections > 0:
        return now
    return max(started, activity.last_activity)


def idle_stop_at(timeout: Optional[int], started: float, activity: Optional[Activity], now: float) -> Optional[float]:
    """When the guard stops the runtime for idleness; None = never (no timeout, or its activity is unknown)."""
    if timeout is None:
        return None
    since = idle_since(started, activity, now)
    return None if since is None else since + timeout


# -- asking JupyterLab ---------------------------------------------------------------------------------------------


def parse_time(value: Any) -> float:
    """jupyter_server's ISO-8601 UTC times ("2024-05-01T08:00:00.123456Z") as epoch seconds."""
    if not isinstance(value, str) or not value:
        raise ProbeError(f"expected an ISO time, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProbeError(f"expected an ISO time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _peer_uid(sock: socket.socket) -> int:
    """The uid of the process listening on the other end (SO_PEERCRED, in the guard's user namespace)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _get(sock_path: str, url: str, token: str, deadline: float, uid: Optional[int]) -> Tuple[int, Any]:
    """One HTTP/1.0 GET over the unix socket, all of it (connect, request, answer) done by ``deadline``.

    The runtime is the user's: her JupyterLab may answer slowly, byte by byte or not at all, and she may put a link to
    another socket where hers should be. So the whole exchange has one deadline (the guard holds its lock meanwhile),
    the answer is read up to MAX_ANSWER bytes, and with ``uid`` the listener must run as that uid (a link to a socket
    of root's or of another user's is refused before anything is sent).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chunks: List[bytes] = []
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.connect(sock_path)
        if uid is not None and _peer_uid(sock) != uid:
            raise ProbeError(f"{sock_path}: the listener does not run as uid {uid}")
        request = (
            f"GET {url} HTTP/1.0\r\nHost: localhost\r\nAuthorization: token {token}\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeError(f"{url}: no complete answer in time")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise ProbeError(f"{url}: an answer larger than {MAX_ANSWER} bytes")
    except (OSError, UnicodeError) as exc:
        raise ProbeError(f"{url}: {exc}") from None
    finally:
        sock.close()
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise ProbeError(f"{url}: not an HTTP answer")
    code = int(status_line[1])
    if code != 200:
        return code, None
    try:
        return code, json.loads(body)
    except ValueError:
        raise ProbeError(f"{url}: the answer is not JSON") from None


def activity_from(status: Any, kernels: Any, terminals: Any) -> Activity:
    """Combine the three reports (terminals None: the server has no terminals)."""
    if not isinstance(status, dict) or not isinstance(kernels, list):
        raise ProbeError("unexpected answer to /api/status or /api/kernels")
    latest = parse_time(status.get("last_activity"))
    busy = False
    connections = status.get("connections", 0)
    connections = connections if isinstance(connections, int) else 0
    kernel_connections = 0
    for kernel in kernels:
        if not isinstance(kernel, dict):
            raise ProbeError("unexpected kernel in /api/kernels")
        if kernel.get("last_activity"):
            latest = max(latest, parse_time(kernel["last_activity"]))
        busy = busy or kernel.get("execution_state") == "busy"
        count = kernel.get("connections", 0)
        kernel_connections += count if isinstance(count, int) else 0
    for terminal in terminals or []:
        if isinstance(terminal, dict) and terminal.get("last_activity"):
            latest = max(latest, parse_time(terminal["last_activity"]))
    return Activity(last_activity=latest, busy=busy, connections=max(connections, kernel_connections))


def probe(
    sock_path: str, base_url: str, token: str, timeout: float = PROBE_TIMEOUT, uid: Optional[int] = None
) -> Activity:
    """Ask the JupyterLab listening on SOCK_PATH (served under BASE_URL) for its activity; ProbeError if it cannot.

    ``uid``: the listener must run as this uid (the runtime's user). All three requests share ``timeout``.
    """
    deadline = time.monotonic() + timeout
    base = base_url.rstrip("/") + "/api"
    code, status = _get(sock_path, f"{base}/status", token, deadline, uid)
    if code != 200:
        raise ProbeError(f"{base}/status answered {code}")
    code, kernels = _get(sock_path, f"{base}/kernels?no_track_activity=1", token, deadline, uid)
    if code != 200:
        raise ProbeError(f"{base}/kernels answered {code}")
    code, terminals = _get(sock_path, f"{base}/terminals?no_track_activity=1", token, deadline, uid)
    if code not in (200, 404):  # 404: terminals are disabled, so none can be active
        raise ProbeError(f"{base}/terminals answered {code}")
    return activity_from(status, kernels, terminals)


def probe_runtime(socket_root: str, token_dir: str, user: str, uid: int, timeout: float = PROBE_TIMEOUT) -> Activity:
    """USER's runtime, as the front door reaches it: SOCKET_ROOT/USER/jupyter.sock, base URL /user/USER/, run by UID."""
    token = files.read_token(token_dir, user)
    if token is None:
        raise ProbeError(f"no runtime token for {user}")
    return probe(os.path.join(socket_root, user, SOCKET_NAME), f"/user/{user}/", token, timeout, uid)


# -- the state between guard runs -------------------------------------------------------------------------------------
# {"<session id>": {"since": epoch or null, "warned": [offsets sent for this idle period]}}: written by every guard run
# for the running sessions only; `status` reads it (so showing idle_stop_at never asks a runtime), and the warnings of
# an idle period start over when the runtime was active again (its "since" moved).


def state_path(ledger: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), STATE_FILE)


def read_state(path: str) -> Dict[str, Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: str, state: Dict[str, Dict[str, Any]]) -> None:
    files.atomic_write(path, json.dumps(state, sort_keys=True) + "\n", mode=0o600)
