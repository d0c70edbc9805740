"""Tickets: what the portal presents to the broker on behalf of a logged-in user.

A ticket is ``base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload))``; the payload names the user, the
password generation at login, a random id (for logout) and the issue and expiry times. Only the broker holds the
key (root-only file), so the portal can pass tickets along but cannot make one for a user who did not log in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Optional


class TicketError(Exception):
    pass


@dataclass(frozen=True)
class Ticket:
    user: str
    generation: int
    ticket_id: str
    issued: float
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: str) -> bytes:
    """32 random bytes in a root-only file, created on first use (kept across restarts: sessions survive them)."""
    # The key's directory is /etc/metalab, which others read (portal.json): create it if missing, never chmod it;
    # the key file itself is what stays root-only.
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    with open(path, encoding="ascii") as fh:
        if os.fstat(fh.fileno()).st_mode & 0o077:
            raise TicketError(f"{path}: others can read the ticket key; chmod 0600 it (or remove it for a new one)")
        key = bytes.fromhex(fh.read().strip())
    if len(key) < 32:
        raise TicketError(f"{path}: the ticket key is too short; remove the file to make a new one")
    return key


class TicketSigner:
    def __init__(self, key: bytes, ttl: int) -> None:
        self.key = key
        self.ttl = ttl

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, b"metalab-ticket-v1." + payload, hashlib.sha256).digest()

    def mint(self, user: str, generation: int, now: Optional[float] = None) -> str:
        now = time.time() if now is None else now
        body = {"u": user, "g": generation, "i": secrets.token_urlsafe(12), "iat": int(now), "exp": int(now + self.ttl)}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, ticket: object, now: Optional[float] = None) -> Ticket:
        """The ticket's content if its signature is good and it has not expired; TicketError otherwise."""
        now = time.time() if now is None else now
        if not isinstance(ticket, str) or ticket.count(".") != 1 or len(ticket) > 1024:
            raise TicketError("malformed ticket")
        body_b64, mac_b64 = ticket.split(".")
        try:
            payload, mac = _unb64(body_b64), _unb64(mac_b64)
        except (ValueError, TypeError):
            raise TicketError("malformed ticket") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TicketError("bad ticket signature")
        try:
            body = json.loads(payload)
            result = Ticket(str(body["u"]), int(body["g"]), str(body["i"]), float(body["iat"]), float(body["exp"]))
        except (ValueError, KeyError, TypeError):
            raise TicketError("malformed ticket") from None
        if result.expires <= now:
            raise TicketError("ticket expired")
        return result
