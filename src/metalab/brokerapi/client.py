"""A client of the broker's socket (used by the portal and the tests): ``call(op, **fields)``, and the backup
operations ``backup_snapshots`` / ``backup_restore``."""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, Optional

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
        except TimeoutError:
            raise BrokerError("timeout", f"the lab service did not answer within {self.timeout:.0f}s") from None
        except (OSError, ValueError) as exc:
            raise BrokerError("unavailable", f"the lab service ({self.path}) is not reachable: {exc}") from None
        if not isinstance(response, dict):
            raise BrokerError("unavailable", "the lab service sent an unreadable answer")
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise BrokerError(str(error.get("code", "failure")), str(error.get("message", "unknown error")))


# A restore runs while the portal's request waits; nginx gives up on the portal after 60 s, so the portal stops
# waiting a little earlier and says that the restore goes on (the broker finishes it either way).
RESTORE_WAIT = 50.0


def backup_snapshots(client: BrokerClient, ticket: str) -> Dict[str, Any]:
    """``{user, configured, snapshots: [{id, short_id, time}]}``: the ticket's user's snapshots, newest first."""
    return dict(client.call("backup_snapshots", ticket=ticket))


def backup_restore(client: BrokerClient, ticket: str, snapshot: Optional[str] = None, path: str = "") -> Dict[str, Any]:
    """Restore ``path`` (relative to her home; "" = all of it) from ``snapshot`` (default: the newest) into a new
    dated folder of her home: ``{user, snapshot, path, target, folder, files, bytes}``. A restore that takes longer
    than RESTORE_WAIT raises BrokerError code ``timeout`` while it goes on."""
    waiting = BrokerClient(client.path, timeout=RESTORE_WAIT)
    return dict(waiting.call("backup_restore", ticket=ticket, snapshot=snapshot or None, path=path))
