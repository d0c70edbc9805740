"""The broker's wire protocol: one JSON object a line each way over a unix socket (peer checked with SO_PEERCRED).

A request is ``{"op": ..., **fields}``; an answer is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_REQUEST = 64 * 1024
IO_TIMEOUT = 30.0


def read_message(sock: socket.socket) -> Any:
    chunks = []
    size = 0
    while True:
        chunk = sock.recv(8192)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ValueError(f"request larger than {MAX_REQUEST} bytes")
        if chunk.endswith(b"\n"):
            break
    return json.loads(b"".join(chunks).decode("utf-8"))
