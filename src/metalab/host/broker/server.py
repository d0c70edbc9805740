"""The broker's transport: a unix stream socket, one JSON request and one JSON response per connection.

Who may connect is checked twice: by the socket's mode and group (``socket_mode``, ``socket_group``: only the portal
account's group reaches it) and by the kernel's peer credentials (``SO_PEERCRED``) against ``clients``. Every
request is then authorised by its ticket (metalab.host.broker.service).
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from typing import Any, Dict, Optional, Tuple

from metalab.brokerapi.protocol import IO_TIMEOUT, read_message
from metalab.host.broker.config import BrokerConfig
from metalab.host.broker.service import Broker

log = logging.getLogger("metalab.broker")


def peer_credentials(sock: socket.socket) -> Tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket, as the kernel saw it at connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class _Handler(socketserver.BaseRequestHandler):
    server: BrokerServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IO_TIMEOUT)
        pid, uid, _gid = peer_credentials(sock)
        response: Dict[str, Any]
        if uid not in self.server.config.clients:
            log.warning("refused a connection from uid %d (pid %d): not in clients", uid, pid)
            response = {
                "ok": False,
                "error": {"code": "forbidden", "message": f"uid {uid} may not use the broker (see clients)"},
            }
        else:
            try:
                request = read_message(sock)
            except (ValueError, OSError) as exc:
                response = {"ok": False, "error": {"code": "bad-request", "message": f"unreadable request: {exc}"}}
            else:
                response = self.server.broker.handle(request)
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps(response).encode("utf-8") + b"\n")


class BrokerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, config: BrokerConfig, broker: Optional[Broker] = None) -> None:
        self.config = config
        self.broker = broker or Broker(config)
        path = config.socket
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a previous run
        old_umask = os.umask(0o177)  # nobody can connect before the mode and group are set
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old_umask)
        if config.socket_group:
            try:
                gid = grp.getgrnam(config.socket_group).gr_gid
            except KeyError:
                self.server_close()
                raise OSError(f"socket_group: group {config.socket_group!r} does not exist on this host") from None
            os.chown(path, -1, gid)
        os.chmod(path, config.socket_mode)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.socket)


def serve_in_thread(config: BrokerConfig) -> Tuple[BrokerServer, threading.Thread]:
    """Start a broker in a background thread (tests; ``serve`` in the CLI runs it in the foreground)."""
    server = BrokerServer(config)
    thread = threading.Thread(target=server.serve_forever, name="metalab-broker", daemon=True)
    thread.start()
    return server, thread
