"""A client of the broker's socket (used by the portal and the tests): ``call(op, **fields)``."""

from __future__ import annotations

import json
import socket
from typing import Any

from metalab.brokerapi.protocol import read_message


class BrokerError(Exception):
    """The broker answered with an error (``code`` as in metalab.host.broker.service) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BrokerClient:
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout  # a start waits for the guard lock and podman run

    def call(self, op: str, **fields: Any) -> Any:
        request = dict(fields, op=op)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
                response = read_message(sock)
        except (OSError, ValueError) as exc:
            raise BrokerError("unavailable", f"the lab service ({self.path}) is not reachable: {exc}") from None
        if not isinstance(response, dict):
            raise BrokerError("unavailable", "the lab service sent an unreadable answer")
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise BrokerError(str(error.get("code", "failure")), str(error.get("message", "unknown error")))
