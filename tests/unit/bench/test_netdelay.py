"""benchmarks/netdelay.py, the SSH ProxyCommand that adds a round trip: the benchmarks' network figures rest on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

NETDELAY = Path(__file__).resolve().parents[3] / "benchmarks" / "netdelay.py"


@pytest.fixture
def echo_server() -> Iterator[Tuple[int, List[bytes]]]:
    """A loopback TCP server that echoes each connection and records everything it received (after EOF)."""
    server = socket.create_server(("127.0.0.1", 0))
    received: List[bytes] = []
    thread = threading.Thread(target=_echo_once, args=(server, received), daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.close()
    thread.join(timeout=5)


def start(port: int, rtt_ms: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(NETDELAY), "--rtt-ms", str(rtt_ms), "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def roundtrip(proc: subprocess.Popen[bytes], data: bytes) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    t0 = time.monotonic()
    proc.stdin.write(data)
    proc.stdin.flush()
    got = b""
    while len(got) < len(data):
        got += os.read(proc.stdout.fileno(), 65536)
    assert got == data
    return time.monotonic() - t0


def test_every_exchange_waits_a_whole_round_trip(echo_server):
    port, _ = echo_server
    proc = start(port, 200)
    try:
        times = [roundtrip(proc, f"exchange {i}\n".encode()) for i in range(3)]
    finally:
        proc.kill()
        proc.wait()
    # Half the round trip on the way out, half on the way back: never faster than the round trip.
    assert min(times) >= 0.2, times


def test_bytes_arrive_whole_and_in_order_and_eof_ends_the_session(echo_server):
    port, received = echo_server
    proc = start(port, 5)
    payload = bytes(range(256)) * 4096  # 1 MiB, many chunks each way
    out, err = proc.communicate(payload, timeout=30)
    assert proc.returncode == 0, err
    assert out == payload
    assert received == [payload]


def test_no_added_delay_with_zero_rtt():
    """Zero adds nothing: against the same exchanges with a 300 ms round trip in the same run, the zero-RTT ones are
    at least 200 ms faster (a comparison, not a wall-clock bound, so a loaded machine slows both alike)."""

    def median_exchange(rtt_ms: float) -> float:
        server = socket.create_server(("127.0.0.1", 0))
        thread = threading.Thread(target=_echo_once, args=(server,), daemon=True)
        thread.start()
        proc = start(server.getsockname()[1], rtt_ms)
        try:
            times = sorted(roundtrip(proc, f"exchange {i}\n".encode()) for i in range(3))
        finally:
            proc.kill()
            proc.wait()
            server.close()
            thread.join(timeout=5)
        return times[1]

    zero, delayed = median_exchange(0), median_exchange(300)
    assert delayed - zero >= 0.2, (zero, delayed)


def _echo_once(server: socket.socket, received: Optional[List[bytes]] = None) -> None:
    """Echo one connection; what it received (after EOF) goes to ``received``."""
    with server:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
                conn.sendall(chunk)
            if received is not None:
                received.append(data)


def test_unreachable_host_fails_like_ssh_with_the_address():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, str(NETDELAY), "--rtt-ms", "10", "127.0.0.1", str(port)],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 255
    assert f"127.0.0.1:{port}" in out.stderr


def test_negative_rtt_refused():
    out = subprocess.run([sys.executable, str(NETDELAY), "--rtt-ms", "-1", "127.0.0.1", "22"],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 2
    assert "--rtt-ms must not be negative: -1" in out.stderr
