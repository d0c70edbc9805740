"""The home host's side of a multi-host lab's broker channel (docs/security.md, "Trust between lab hosts").

A small HTTP adapter (standard library http.server) on a root-owned unix socket, ``home_adapter.socket``, reachable
only by root and nginx's group (``home_adapter.group``, socket mode 0660). The host's internal nginx listener, which
admits only the front door's lab certificate, proxies ``POST /_metalab/broker`` to it; nothing else reaches it.

It serves exactly the runtime operations the front door's portal needs for the users homed on this host, and hands
them to this host's broker logic (metalab.host.broker.service): ``status``, ``start`` (with ``kind``), ``stop`` and
``token``, as ``{"op": OP, "user": NAME[, "kind": "cpu"|"gpu"]}``. The front door's broker checked her login ticket;
this host trusts the front door for who she is (the channel's client certificate), and checks the rest itself: the
operation is one of the four, the fields are exactly those, and she is a user of this host's guard config. Every
answer is JSON: the broker's envelope ``{"ok": ..., "result" | "error"}`` with HTTP 200, or with 400 (bad request),
403 (not homed here), 404, 405 or 413 for what never reaches the broker.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socketserver
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from metalab.rules import USER_NAME

if TYPE_CHECKING:
    from metalab.host.broker.service import Broker

log = logging.getLogger("metalab.broker.home")

PATH = "/_metalab/broker"
MAX_BODY = 4096
OPS = {"status": (), "start": ("kind",), "stop": (), "token": ()}  # op -> its optional fields besides "user"


@dataclass(frozen=True)
class AdapterConfig:
    socket: str = "/run/metalab/broker-home.sock"
    group: Optional[str] = None  # nginx's group; None: root only (tests)


def parse_adapter(raw: Any) -> Optional[AdapterConfig]:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"socket", "group"}:
        raise ValueError(f"home_adapter: expected an object {{socket, group}}, got {raw!r}")
    path = raw.get("socket", AdapterConfig.socket)
    if not (isinstance(path, str) and os.path.isabs(path)):
        raise ValueError(f"home_adapter.socket: expected an absolute path, got {path!r}")
    group = raw.get("group")
    if group is not None and not (isinstance(group, str) and group):
        raise ValueError(f"home_adapter.group: expected a group name, got {group!r}")
    return AdapterConfig(socket=path, group=group)


def _bad(code: str, message: str) -> Dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class HomeAdapter:
    """The four operations, checked, for users homed on this host; ``handle`` returns (HTTP status, JSON answer)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _local_users(self) -> Any:
        from metalab.host.guard.config import load_config

        return load_config(self.broker.config.guard_config).users

    def handle(self, request: Any) -> Tuple[int, Dict[str, Any]]:
        if not isinstance(request, dict):
            return 400, _bad("bad-request", "expected a JSON object {op, user}")
        op = request.get("op")
        if not isinstance(op, str) or op not in OPS:
            return 400, _bad("bad-request", f"op: {op!r} is not served to the front door (only {', '.join(OPS)})")
        extra = set(request) - {"op", "user", *OPS[op]}
        if extra:
            return 400, _bad("bad-request", f"{op}: unexpected fields {sorted(extra)}")
        user = request.get("user")
        if not (isinstance(user, str) and USER_NAME.fullmatch(user)):
            return 400, _bad("bad-request", f"user: expected a lab user name, got {user!r}")
        try:
            local = user in self._local_users()
        except Exception as exc:  # noqa: BLE001 - a broken guard config is the broker's "failure", named
            return 200, _bad("failure", f"guard config: {exc}")
        if not local:
            log.warning("refused %s for %s: not homed on this host", op, user)
            return 403, _bad("forbidden", f"{user} is not homed on this host")
        broker = self.broker
        if op == "status":
            answer = broker.answer(op, lambda: broker.status_of(user))
        elif op == "start":
            kind = request.get("kind", "cpu")
            if kind not in ("cpu", "gpu"):
                return 400, _bad("bad-request", f"kind: expected cpu or gpu, got {kind!r}")
            answer = broker.answer(op, lambda: broker.start_of(user, kind))
        elif op == "stop":
            answer = broker.answer(op, lambda: broker.stop_of(user))
        else:
            answer = broker.answer(op, lambda: broker.token_of(user))
        log.info("%s for %s from the front door: %s", op, user, "ok" if answer.get("ok") else answer["error"]["code"])
        return 200, answer


class _Handler(BaseHTTPRequestHandler):
    server: HomeServer
    protocol_version = "HTTP/1.0"
    server_version = "metalab-broker-home"
    sys_version = ""

    def address_string(self) -> str:
        return "nginx"  # a unix socket has no client address

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug(format, *args)

    def _send(self, status: int, answer: Dict[str, Any]) -> None:
        body = json.dumps(answer).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != PATH:
            return self._send(404, _bad("not-found", f"{self.path!r}: only {PATH} is served"))
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(400, _bad("bad-request", "Content-Length: required"))
        if length < 0 or length > MAX_BODY:
            return self._send(413, _bad("bad-request", f"request body over {MAX_BODY} bytes"))
        try:
            request = json.loads(self.rfile.read(length))
        except (ValueError, OSError) as exc:
            return self._send(400, _bad("bad-request", f"unreadable request: {exc}"))
        self._send(*self.server.adapter.handle(request))

    def _refuse(self) -> None:
        self._send(405, _bad("bad-request", f"{self.command}: only POST {PATH}"))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse  # noqa: N815


class HomeServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, config: AdapterConfig, adapter: HomeAdapter) -> None:
        self.config = config
        self.adapter = adapter
        os.makedirs(os.path.dirname(config.socket), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.socket)
        old_umask = os.umask(0o177)  # nobody connects before the mode and group are set
        try:
            super().__init__(config.socket, _Handler)
        finally:
            os.umask(old_umask)
        if config.group:
            try:
                gid = grp.getgrnam(config.group).gr_gid
            except KeyError:
                self.server_close()
                raise OSError(f"home_adapter.group: group {config.group!r} does not exist on this host") from None
            os.chown(config.socket, -1, gid)
            os.chmod(config.socket, 0o660)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.socket)
