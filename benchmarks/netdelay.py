"""Network latency for the benchmarks: an SSH ProxyCommand that delays every byte by half a round trip each way.

    ssh -o ProxyCommand='python3 benchmarks/netdelay.py --rtt-ms 10 %h %p' host

The lab hosts of the benchmarks are nspawn sandboxes on the same machine: a round trip over their veth pair
takes microseconds, where a controller in the server room takes a fraction of a millisecond and one reached
over a VPN or another site 5-50 ms. The kernel's netem qdisc would emulate that, but the development
machine's kernel has none (`tc qdisc ... netem`: "Specified qdisc kind is unknown"), so the delay is added
here, in user space, on the one TCP stream that carries SSH: whatever ssh sends reaches sshd half a round trip
later, and whatever sshd answers reaches ssh half a round trip after that. Order and bytes are kept;
bandwidth is not limited (a no-change rerun moves little data). With ControlMaster every session of the run
shares that one stream, as it does over a real network.

The delay is applied when bytes are read from one side: a chunk read at time t is written to the other side at
t + rtt/2, never earlier, and never before the chunk read before it.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import threading
import time
from contextlib import suppress
from typing import BinaryIO, Callable, Optional, Sequence

CHUNK = 65536
_EOF = b""


def pump(read: Callable[[int], bytes], write: Callable[[bytes], None], close: Callable[[], None], delay: float) -> None:
    """Copy read() to write(), each chunk no earlier than `delay` seconds after it was read; close() at EOF."""
    pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def sender() -> None:
        while True:
            due, chunk = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if chunk == _EOF:
                close()
                return
            try:
                write(chunk)
            except OSError:
                return

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    while True:
        try:
            chunk = read(CHUNK)
        except OSError:
            chunk = _EOF
        pending.put((time.monotonic() + delay, chunk))
        if chunk == _EOF:
            break
    thread.join()


def relay(sock: socket.socket, stdin: BinaryIO, stdout: BinaryIO, rtt: float) -> None:
    """Relay stdin -> sock and sock -> stdout, each direction delayed by rtt/2; returns when both are closed."""
    one_way = rtt / 2

    def write_out(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    def close_sock_write() -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def close_out() -> None:
        with suppress(OSError):
            stdout.close()

    upstream = threading.Thread(
        target=pump, args=(lambda n: os.read(stdin.fileno(), n), sock.sendall, close_sock_write, one_way), daemon=True
    )
    upstream.start()
    pump(sock.recv, write_out, close_out, one_way)
    # sshd closed its side: the session is over whatever ssh still has to say.


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip time to add, in milliseconds")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.rtt_ms < 0:
        parser.error(f"--rtt-ms must not be negative: {args.rtt_ms}")
    try:
        sock = socket.create_connection((args.host, args.port), timeout=30)
    except OSError as exc:
        print(f"netdelay: cannot connect to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 255
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    relay(sock, sys.stdin.buffer, sys.stdout.buffer, args.rtt_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
