"""The front door's side of a multi-host lab's broker channel (docs/security.md, "Trust between lab hosts").

A user homed on another lab host logs in at the front door, but her runtime runs on her home host. The front door's
broker sends her runtime operations (``status``, ``start``, ``stop``, ``token``) to that host's internal listener,
``https://<address>:<port>/_metalab/broker``, over mutual TLS: the front door presents its lab host certificate and
key, and accepts only a server certificate from the lab CA for that address. The home host answers with the
envelope of its own broker (metalab.host.broker.home). A home host that does not answer within ``timeout`` seconds
gives an ``unreachable`` error naming the host; other users are not affected. A start or stop, once connected, may
take up to SLOW_TIMEOUT for its answer (the home host's ``podman run``).

Config (broker.json, rendered only on the front door of a multi-host lab)::

    "homes": {"bob": {"host": "lab2", "address": "10.0.0.12"}},
    "channel": {"port": 8443, "cert": "/etc/metalab/tls/lab-host.crt", "key": "/etc/metalab/tls/lab-host.key",
                "ca": "/etc/metalab/tls/lab-ca.crt", "timeout": 5}

Standard library only (http.client and ssl: no proxy from the environment is ever used).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from metalab.host.broker.errors import ApiError
from metalab.rules import USER_NAME

PATH = "/_metalab/broker"
MAX_ANSWER = 1 << 20  # bytes read of a home host's answer
SLOW_OPS = ("start", "stop")  # wait for the answer (not for the connection) up to SLOW_TIMEOUT seconds
TOKEN_TTL = 10.0  # seconds a home host's answer to "token" is reused (nginx asks on every proxied request)
SLOW_TIMEOUT = 55.0  # below the portal's own 60 s wait for the broker

log = logging.getLogger("metalab.broker")


@dataclass(frozen=True)
class Home:
    host: str  # inventory name (shown in messages)
    address: str  # where the front door reaches it (the name or IP in its certificate)


@dataclass(frozen=True)
class ChannelConfig:
    cert: str
    key: str
    ca: str
    port: int = 8443
    timeout: float = 5.0


def _abs(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not (isinstance(value, str) and os.path.isabs(value)):
        raise ValueError(f"channel.{key}: expected an absolute path, got {value!r}")
    return value


def parse_channel(data: Mapping[str, Any]) -> Tuple[Dict[str, Home], Optional[ChannelConfig]]:
    """``homes`` and ``channel`` of a broker config; ValueError naming the bad entry."""
    homes_raw = data.get("homes") or {}
    channel_raw = data.get("channel")
    if not isinstance(homes_raw, Mapping):
        raise ValueError("homes: expected an object {user: {host, address}}")
    homes: Dict[str, Home] = {}
    for user, entry in homes_raw.items():
        if not (isinstance(user, str) and USER_NAME.fullmatch(user)):
            raise ValueError(f"homes: {user!r} is not a user name")
        if not isinstance(entry, Mapping) or set(entry) != {"host", "address"}:
            raise ValueError(f"homes.{user}: expected {{host, address}}, got {entry!r}")
        host, address = entry["host"], entry["address"]
        if not (isinstance(host, str) and host and isinstance(address, str) and address and "/" not in address):
            raise ValueError(f"homes.{user}: host and address must be non-empty names, got {entry!r}")
        homes[user] = Home(host=host, address=address)
    if channel_raw is None:
        if homes:
            raise ValueError("homes: users homed on other hosts need `channel` (certificate, key, lab CA)")
        return homes, None
    if not isinstance(channel_raw, Mapping):
        raise ValueError("channel: expected an object {port, cert, key, ca, timeout}")
    unknown = set(channel_raw) - {"port", "cert", "key", "ca", "timeout"}
    if unknown:
        raise ValueError(f"channel: unknown keys {sorted(unknown)}")
    port = channel_raw.get("port", 8443)
    if not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
        raise ValueError(f"channel.port: expected a port number, got {port!r}")
    timeout = channel_raw.get("timeout", 5)
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 120):
        raise ValueError(f"channel.timeout: expected seconds between 0 and 120, got {timeout!r}")
    channel = ChannelConfig(
        cert=_abs(channel_raw, "cert"), key=_abs(channel_raw, "key"), ca=_abs(channel_raw, "ca"),
        port=port, timeout=float(timeout),
    )  # fmt: skip
    return homes, channel


class HomeRelay:
    """Sends a remote user's runtime operations to her home host and returns its broker's result."""

    def __init__(self, channel: Optional[ChannelConfig], homes: Mapping[str, Home]) -> None:
        if channel is None:
            raise ValueError("homes without channel")
        self.channel = channel
        self.homes = dict(homes)
        # user -> (until, answer): her token, asked by the front door's auth_request on every request of her
        # JupyterLab, costs one round trip per TOKEN_TTL instead of one per request; a start or stop through the
        # front door drops it at once.
        self._tokens: Dict[str, Tuple[float, Dict[str, Any]]] = {}
        self._tokens_lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        # Made per call: a renewed certificate (roles/frontdoor, channel.yml) is used without a broker restart.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.channel.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.channel.cert, self.channel.key)
        return context

    def unreachable(self, user: str, reason: str) -> ApiError:
        host = self.homes[user].host
        log.warning("home host %s of %s is not reachable: %s", host, user, reason)
        return ApiError(
            "unreachable",
            f"{user}'s home host {host} is not reachable ({reason}); her runtime cannot be started, stopped or "
            "opened until it is back (other users are not affected)",
        )

    def call(self, user: str, op: str, **fields: Any) -> Dict[str, Any]:
        now = time.monotonic()
        with self._tokens_lock:
            if op == "token":
                until, cached = self._tokens.get(user, (0.0, {}))
                if now < until:
                    return dict(cached)
            else:
                self._tokens.pop(user, None)
        answer = self._call(user, op, **fields)
        if op == "token" and answer.get("token"):
            with self._tokens_lock:
                self._tokens[user] = (now + TOKEN_TTL, dict(answer))
        return answer

    def _call(self, user: str, op: str, **fields: Any) -> Dict[str, Any]:
        home = self.homes[user]
        body = json.dumps({"op": op, "user": user, **fields}).encode("utf-8")
        try:
            context = self._context()
        except (OSError, ssl.SSLError) as exc:
            raise ApiError("failure", f"the front door's channel certificate cannot be read: {exc}") from None
        conn = http.client.HTTPSConnection(home.address, self.channel.port, timeout=self.channel.timeout,
                                           context=context)  # fmt: skip
        try:
            conn.connect()  # within the channel's timeout
            if op in SLOW_OPS and conn.sock is not None:
                conn.sock.settimeout(SLOW_TIMEOUT)  # the home host is up; its podman run may take a while
            conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER)
            status = response.status
        except ssl.SSLCertVerificationError as exc:
            raise self.unreachable(user, f"its certificate is not the lab's: {exc.verify_message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise self.unreachable(user, str(exc) or type(exc).__name__) from None
        finally:
            conn.close()
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            if status == 403:
                raise ApiError("failure", f"{home.host} refused the front door's certificate (HTTP 403)")
            raise self.unreachable(user, f"HTTP {status} without a broker answer")
        if envelope.get("ok") is True and isinstance(envelope.get("result"), dict):
            return envelope["result"]
        error = envelope["error"] if isinstance(envelope.get("error"), dict) else {}
        code, message = error.get("code"), error.get("message")
        raise ApiError(
            code if isinstance(code, str) and code else "failure",
            f"{home.host}: {message}" if isinstance(message, str) else f"{home.host}: HTTP {status}",
        )
