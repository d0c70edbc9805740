"""Routing overhead of a multi-host lab, the controller's side (benchmarks/run.py, section `route`).

The same requests to a user's JupyterLab through the lab's one address (the front door), for two users:

  local   homed on the front door itself: nginx -> her JupyterLab's unix socket (as in a single-host lab)
  remote  homed on another lab host: front door nginx -> mutual-TLS channel (kept-alive upstream connections) ->
          the home host's internal listener (lab_internal_port) -> his JupyterLab's unix socket

Each user has one kept-alive HTTPS connection from the controller to the front door, with her own token in an
`Authorization: token ...` header (the token API access of docs/portal.md). A (re)connection is made outside the
timed part; a request whose kept-alive connection the server had closed is retried once on a new one and counted.
Rounds interleave the users (local, remote, then remote, local, ...) and the kinds of request, so drifting load
on the machine hits both alike. A sample is the wall time from sending the request to having read the whole body.

Standard library only. The sandbox setup (converge, runtimes started, tokens) is benchmarks/run.py's.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SIDES = ("local", "remote")
FILE_NAME = "metalab-routebench.bin"
FILE_BYTES = 4 * 2**20
LOAD_EVERY_S = 5.0


class RouteError(Exception):
    pass


def round_order(index: int, sides: Sequence[str] = SIDES) -> Tuple[str, ...]:
    """The sides in round ``index``: as given in even rounds, reversed in odd ones (neither always goes first)."""
    return tuple(sides) if index % 2 == 0 else tuple(reversed(sides))


def schedule(counts: Dict[str, int], sides: Sequence[str] = SIDES) -> List[Tuple[int, str, str]]:
    """(round, kind, side) in the order they are measured: round i holds every kind that still wants samples
    (``counts``: samples per side of each kind), each kind once per side in round_order(i)."""
    out: List[Tuple[int, str, str]] = []
    for i in range(max(counts.values(), default=0)):
        for kind, n in counts.items():
            if i < n:
                out += [(i, kind, side) for side in round_order(i, sides)]
    return out


@dataclass
class Client:
    """One user's kept-alive connection to the front door."""

    host: str
    port: int
    user: str
    token: str
    tls: bool = True
    timeout: float = 60.0
    connects: int = 0
    retries: int = 0
    conn: Optional[http.client.HTTPConnection] = field(default=None, repr=False)

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None or self.conn.sock is None:
            if self.conn is not None:
                self.conn.close()
            if self.tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # the sandbox front door's self-signed certificate; not under test
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.connect()  # TCP and TLS handshakes: not part of a sample
            self.connects += 1
        return self.conn

    def path(self, rest: str) -> str:
        return f"/user/{self.user}/{rest.lstrip('/')}"

    def request(self, method: str, rest: str, body: Optional[bytes] = None) -> Tuple[int, bytes, float]:
        """(status, body, seconds from sending the request to the end of the body)."""
        headers = {"Authorization": f"token {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connection()
            t0 = time.perf_counter()
            try:
                conn.request(method, self.path(rest), body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the kept-alive connection between two requests: once more on a new one.
                conn.close()
                if attempt:
                    raise
                self.retries += 1
                continue
            return resp.status, data, time.perf_counter() - t0
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def payload(size: int = FILE_BYTES, seed: bytes = b"metalab route bench") -> bytes:
    """Deterministic bytes that do not compress (no layer can shrink the transfer): SHAKE-256 output."""
    return hashlib.shake_256(seed).digest(size)


def upload(client: Client, name: str, data: bytes) -> None:
    """Put ``data`` into her home through the contents API (through the front door, like the samples)."""
    body = json.dumps({"type": "file", "format": "base64", "content": b64encode(data).decode()}).encode()
    status, answer, _ = client.request("PUT", f"api/contents/{name}", body)
    if status not in (200, 201):
        raise RouteError(f"upload of {name} for {client.user}: HTTP {status}: {answer[:300]!r}")


def wait_ready(client: Client, give_up_s: float = 180.0, poll_s: float = 0.5) -> float:
    """Poll her api/status until 200 (her runtime is up and the route works); seconds waited."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < give_up_s:
        try:
            status, _, _ = client.request("GET", "api/status")
            if status == 200:
                return time.monotonic() - t0
            last = status
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            client.close()
            client.conn = None
        time.sleep(poll_s)
    raise RouteError(f"{client.user}: api/status gave no 200 within {give_up_s:.0f} s (last: {last})")


def check_status(status: int, body: bytes) -> Optional[str]:
    """None when an api/status answer is JupyterLab's (200, its JSON), else what is wrong."""
    if status != 200:
        return f"HTTP {status}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:100]!r}"
    return None if isinstance(data, dict) and "started" in data else f"not JupyterLab's status: {body[:100]!r}"


def check_file(expected: bytes) -> Callable[[int, bytes], Optional[str]]:
    def check(status: int, body: bytes) -> Optional[str]:
        if status != 200:
            return f"HTTP {status}"
        if body != expected:
            return f"{len(body)} bytes, not the {len(expected)} uploaded"
        return None

    return check


@dataclass
class Kind:
    name: str
    rest: str  # the path under /user/NAME/
    samples: int
    check: Callable[[int, bytes], Optional[str]]
    size_bytes: int = 0  # of the body, for throughput (0: a small request)


def measure(
    clients: Dict[str, Client], kinds: Sequence[Kind], warmup: int = 5, clock: Callable[[], float] = time.monotonic
) -> Dict[str, Any]:
    """Warm-up requests (not kept), then every sample of schedule(); each answer is checked. Raw samples out."""
    by_name = {k.name: k for k in kinds}
    for kind in kinds:
        for _ in range(warmup):
            for side in SIDES:
                status, body, _ = clients[side].request("GET", kind.rest)
                problem = kind.check(status, body)
                if problem:
                    raise RouteError(f"warm-up {kind.name} for {side} ({clients[side].user}): {problem}")
    samples: Dict[str, Dict[str, List[float]]] = {k.name: {s: [] for s in SIDES} for k in kinds}
    load: List[Tuple[float, float]] = []
    t0 = clock()
    next_load = t0
    for _i, name, side in schedule({k.name: k.samples for k in kinds}):
        now = clock()
        if now >= next_load:
            load.append((round(now - t0, 1), os.getloadavg()[0]))
            next_load = now + LOAD_EVERY_S
        status, body, seconds = clients[side].request("GET", by_name[name].rest)
        problem = by_name[name].check(status, body)
        if problem:
            raise RouteError(f"{name} for {side} ({clients[side].user}): {problem}")
        samples[name][side].append(seconds)
    load.append((round(clock() - t0, 1), os.getloadavg()[0]))
    return {
        "samples": samples,
        "sizes": {k.name: k.size_bytes for k in kinds},
        "paths": {k.name: k.rest for k in kinds},
        "warmup_per_side": warmup,
        "connects": {side: clients[side].connects for side in SIDES},
        "retries": {side: clients[side].retries for side in SIDES},
        "loadavg_1min": load,
        "seconds": round(clock() - t0, 1),
    }


def route(
    host: str, port: int, users: Dict[str, Tuple[str, str]], api_n: int, file_n: int, warmup: int = 5, tls: bool = True
) -> Dict[str, Any]:
    """The whole controller side: ``users`` maps each side to (user, token). Waits until both answer, uploads the
    file to both homes, measures; raw samples and what was measured come back."""
    clients = {side: Client(host, port, user, token, tls=tls) for side, (user, token) in users.items()}
    try:
        ready = {side: round(wait_ready(c), 1) for side, c in clients.items()}
        data = payload()
        for c in clients.values():
            upload(c, FILE_NAME, data)
        kinds = [
            Kind("api_status", "api/status", api_n, check_status),
            Kind("file_4MiB", f"files/{FILE_NAME}", file_n, check_file(data), len(data)),
        ]
        raw = measure(clients, kinds, warmup)
        raw["users"] = {side: user for side, (user, _token) in users.items()}
        raw["ready_s"] = ready
        raw["file_sha256"] = hashlib.sha256(data).hexdigest()
        return raw
    finally:
        for c in clients.values():
            c.close()
