"""Passwords (scrypt), login failures and lockout, enrollment tokens, ticket revocations.

Why scrypt: the broker runs on the host's system Python with the standard library only (like the guard), and
``hashlib.scrypt`` is a slow, memory-hard KDF in the standard library; argon2/bcrypt would need a compiled
third-party package in root's Python. Each hash records its own parameters, so raising the cost later keeps old
hashes valid.

Files (both root-only, 0600, replaced atomically, changed under an exclusive ``flock`` so the CLI and the running
broker never lose each other's writes):

- ``passwords``: ``{"users": {"alice": {"hash": "$scrypt$...", "generation": 2, "changed": ISO}}}``. The
  generation goes up with every password change; tickets carry it, so a new password ends old sessions.
- ``state``: failed logins and lockouts per (login name, client address) and per login name (unknown names too,
  so a lockout tells nothing about whether an account exists), enrollment tokens (only their SHA-256 is stored),
  revoked ticket ids until they expire.

Login throttling (docs/portal.md, "Passwords, lockout, enrollment"): ``lockout_failures`` failed logins for a name
from one client address lock that name *from that address* for ``lockout``; the same name from another address is
not locked, so nobody can keep someone else out of her account. Per name, once a name has ``lockout_failures``
failures in the window from all addresses together, an address that has failed for it waits before its next
attempt is checked (1 s, doubling with every further failure of the name, at most ``login_slowdown_max``); an
address that has not failed for the name never waits. IPv6 clients count per /64 (one host holds a whole /64).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from metalab.host.broker.config import BrokerConfig, ScryptParams
from metalab.host.guard.files import atomic_write
from metalab.host.guard.policy import format_clock, format_duration

HASH_SCHEME = "$scrypt$"
KEY_LEN = 32
# Bound on the remembered failure records of each kind (an attacker with many addresses cannot grow the file).
MAX_RECORDS = 20000


class AuthError(Exception):
    """A login or enrollment is refused; ``code`` is the broker error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreError(Exception):
    """A password or state file is unusable (bad JSON, unsafe permissions)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    maxmem = 128 * params.n * params.r * params.p + 4 * 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p, maxmem=maxmem, dklen=KEY_LEN
    )


def hash_password(password: str, params: ScryptParams) -> str:
    """``$scrypt$n=N,r=R,p=P$SALT$KEY`` (urlsafe base64 without padding)."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, params)
    return f"{HASH_SCHEME}n={params.n},r={params.r},p={params.p}${_b64(salt)}${_b64(key)}"


def parse_hash(encoded: str) -> Tuple[ScryptParams, bytes, bytes]:
    if not encoded.startswith(HASH_SCHEME):
        raise ValueError("not an scrypt hash")
    fields, salt, key = encoded[len(HASH_SCHEME) :].split("$")
    values = dict(item.split("=", 1) for item in fields.split(","))
    params = ScryptParams(n=int(values["n"]), r=int(values["r"]), p=int(values["p"]))
    return params, _unb64(salt), _unb64(key)


def verify_password(password: str, encoded: str) -> bool:
    try:
        params, salt, key = parse_hash(encoded)
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(_scrypt(password, salt, params), key)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def client_key(client: str) -> str:
    """The throttling key of a client address: the IPv4 address, the /64 of an IPv6 one, "-" when unknown."""
    try:
        ip = ipaddress.ip_address(client.strip())
    except (ValueError, AttributeError):
        return "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _newest(records: Dict[str, Any], limit: int = MAX_RECORDS) -> Dict[str, Any]:
    if len(records) <= limit:
        return records
    keep = sorted(records, key=lambda k: records[k].get("last", 0), reverse=True)[:limit]
    return {k: records[k] for k in keep}


@dataclass(frozen=True)
class Account:
    user: str
    generation: int


class AuthStore:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._thread_lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(max(1, config.max_hashing))
        # Unknown names are checked against this, so they cost one full hash like a wrong password does.
        self._dummy = hash_password(secrets.token_urlsafe(16), config.scrypt)

    # -- files ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.config.state + ".lock"
        os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
        with self._thread_lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    @staticmethod
    def _read(path: str) -> Dict[str, Any]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        with os.fdopen(fd, encoding="utf-8") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            if mode & 0o077:
                raise StoreError(f"{path} is readable by others (mode {oct(mode)}); run chmod 600 {path}")
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}: invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path}: expected a JSON object")
        return data

    @staticmethod
    def _write(path: str, data: Dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)

    def _passwords(self) -> Dict[str, Dict[str, Any]]:
        users = self._read(self.config.passwords).get("users", {})
        return users if isinstance(users, dict) else {}

    def _state(self, now: float) -> Dict[str, Any]:
        state = self._read(self.config.state)
        for key in ("failures", "names", "enrollments", "revoked"):
            if not isinstance(state.get(key), dict):
                state[key] = {}
        # Forget what can no longer matter: old failures, used-up enrollments, revocations of expired tickets.
        # "failures" is keyed "NAME ADDRESS" (a name has no space), "names" by NAME.
        window = self.config.lockout_seconds
        state["failures"] = _newest({
            key: f
            for key, f in state["failures"].items()
            if " " in key and (f.get("locked_until", 0) > now or now - f.get("last", 0) < window)
        })  # fmt: skip
        state["names"] = _newest({name: f for name, f in state["names"].items() if now - f.get("last", 0) < window})
        state["enrollments"] = {k: e for k, e in state["enrollments"].items() if e.get("expires", 0) > now}
        state["revoked"] = {k: exp for k, exp in state["revoked"].items() if exp > now}
        return state

    # -- passwords --------------------------------------------------------------------------------------------

    def check_password_rules(self, user: str, password: str) -> None:
        if len(password) < self.config.min_password_length:
            raise AuthError(
                "bad-password", f"the password must have at least {self.config.min_password_length} characters"
            )
        if password.strip().lower() == user.lower():
            raise AuthError("bad-password", "the password must not be the user name")

    def set_password(self, user: str, password: str, now: Optional[float] = None) -> int:
        """Set (or replace) USER's password; returns the new generation. Unlocks the account."""
        self.check_password_rules(user, password)
        encoded = self._hash(password)
        now = time.time() if now is None else now
        with self._locked():
            data = self._read(self.config.passwords)
            users = data.setdefault("users", {})
            generation = int(users.get(user, {}).get("generation", 0)) + 1
            users[user] = {"hash": encoded, "generation": generation, "changed": _iso(now)}
            self._write(self.config.passwords, data)
            state = self._state(now)
            self._forget_failures(state, user)
            self._write(self.config.state, state)
        return generation

    def remove_password(self, user: str) -> bool:
        with self._locked():
            data = self._read(self.config.passwords)
            users = data.setdefault("users", {})
            if users.pop(user, None) is None:
                return False
            self._write(self.config.passwords, data)
            return True

    def unlock(self, user: str, now: Optional[float] = None) -> bool:
        now = time.time() if now is None else now
        with self._locked():
            state = self._state(now)
            found = self._forget_failures(state, user)
            self._write(self.config.state, state)
            return found

    def generation(self, user: str) -> Optional[int]:
        entry = self._passwords().get(user)
        return None if entry is None else int(entry.get("generation", 0))

    def list_users(self, now: Optional[float] = None) -> Dict[str, Dict[str, Any]]:
        now = time.time() if now is None else now
        with self._locked():
            state = self._state(now)
            out: Dict[str, Dict[str, Any]] = {}
            for name, entry in sorted(self._passwords().items()):
                until = [
                    f.get("locked_until", 0)
                    for key, f in state["failures"].items()
                    if key.startswith(name + " ") and f.get("locked_until", 0) > now
                ]
                out[name] = {
                    "changed": entry.get("changed"),
                    "locked_until": _iso(max(until)) if until else None,  # the latest, from any address
                    "locked_addresses": len(until),
                }
            return out

    @staticmethod
    def _forget_failures(state: Dict[str, Any], user: str) -> bool:
        """Drop USER's failure records, from every address and per name; whether there were any."""
        pairs = [key for key in state["failures"] if key.startswith(user + " ")]
        for key in pairs:
            del state["failures"][key]
        return bool(pairs) | (state["names"].pop(user, None) is not None)

    def _hash(self, password: str) -> str:
        with self._hashing:
            return hash_password(password, self.config.scrypt)

    def _verify(self, password: str, encoded: str) -> bool:
        with self._hashing:
            return verify_password(password, encoded)

    # -- login ------------------------------------------------------------------------------------------------

    def _locked_message(self, user: str, address: str, until: float, now: float) -> str:
        return (
            f"too many failed logins for {user} from this address ({address}): locked until {format_clock(until)} "
            f"UTC (try again in {format_duration(until - now)}, or ask a lab admin to unlock it)"
        )

    def _slowdown(self, name_record: Dict[str, Any], pair_record: Dict[str, Any], now: float) -> float:
        """Seconds this address must still wait before its next attempt at this name (0: none). Only addresses that
        failed for the name wait, only while the name has had ``lockout_failures`` failures in the window, and never
        longer than ``login_slowdown_max`` after their own last failure: nobody else can lengthen it."""
        excess = int(name_record.get("count", 0)) - self.config.lockout_failures
        if excess < 0 or "last" not in pair_record:
            return 0.0
        delay = min(float(self.config.login_slowdown_max), 2.0 ** min(excess, 30))
        return max(0.0, float(pair_record["last"]) + delay - now)

    def login(self, user: str, password: str, client: str = "", now: Optional[float] = None) -> Account:
        """Check USER's password from the client address CLIENT; raises AuthError ``invalid`` (one message for
        unknown user and wrong password) or ``locked`` (this name from this address: locked, or slowed down).
        Unknown names are hashed against a dummy hash and counted like known ones."""
        now = time.time() if now is None else now
        key = user[:64]
        address = client_key(client)
        pair = f"{key} {address}"
        with self._locked():
            state = self._state(now)
            failure = state["failures"].get(pair, {})
            name_record = state["names"].get(key, {})
            entry = self._passwords().get(user)
        locked_until = failure.get("locked_until", 0)
        if locked_until > now:
            raise AuthError("locked", self._locked_message(user, address, locked_until, now))
        wait = self._slowdown(name_record, failure, now)
        if wait > 0:
            raise AuthError(
                "locked",
                f"many failed logins for {user} lately: from this address, try again in {format_duration(wait)}",
            )
        encoded = entry.get("hash") if entry else None
        ok = self._verify(password, encoded if isinstance(encoded, str) else self._dummy) and entry is not None
        with self._locked():
            state = self._state(now)
            if ok:
                # The name's own count stays: a success of the owner does not reset the slow-down for the others.
                state["failures"].pop(pair, None)
                self._write(self.config.state, state)
                assert entry is not None
                return Account(user, int(entry.get("generation", 0)))
            record = state["failures"].setdefault(pair, {"count": 0})
            record["count"] = int(record.get("count", 0)) + 1
            record["last"] = now
            locked = record["count"] >= self.config.lockout_failures
            if locked:
                record["locked_until"] = now + self.config.lockout_seconds
                record["count"] = 0
            per_name = state["names"].setdefault(key, {"count": 0})
            per_name["count"] = int(per_name.get("count", 0)) + 1
            per_name["last"] = now
            self._write(self.config.state, state)
        if locked:
            raise AuthError("locked", self._locked_message(user, address, now + self.config.lockout_seconds, now))
        raise AuthError("invalid", "wrong user name or password")

    # -- enrollment -------------------------------------------------------------------------------------------

    def create_enrollment(self, user: str, ttl: Optional[int] = None, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        expires = now + (ttl or self.config.enroll_ttl)
        with self._locked():
            state = self._state(now)
            # One open link per user: a new link replaces the previous one.
            state["enrollments"] = {k: e for k, e in state["enrollments"].items() if e.get("user") != user}
            state["enrollments"][token_digest(token)] = {"user": user, "expires": expires, "created": now}
            self._write(self.config.state, state)
        return {"user": user, "token": token, "expires": _iso(expires)}

    def check_enrollment(self, token: str, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        with self._locked():
            entry = self._state(now)["enrollments"].get(token_digest(token))
        if entry is None:
            raise AuthError("invalid", "this enrollment link is invalid, used or expired; ask an admin for a new one")
        return {"user": entry["user"], "expires": _iso(entry["expires"])}

    def finish_enrollment(self, token: str, password: str, now: Optional[float] = None) -> Account:
        """Set the password of the token's user and use the token up (single use)."""
        now = time.time() if now is None else now
        user = self.check_enrollment(token, now)["user"]
        self.check_password_rules(user, password)
        with self._locked():
            state = self._state(now)
            if state["enrollments"].pop(token_digest(token), None) is None:  # used concurrently
                raise AuthError("invalid", "this enrollment link was used already")
            self._write(self.config.state, state)
        generation = self.set_password(user, password, now)
        return Account(user, generation)

    # -- ticket revocation ------------------------------------------------------------------------------------

    def revoke(self, ticket_id: str, expires: float, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        with self._locked():
            state = self._state(now)
            state["revoked"][ticket_id] = expires
            self._write(self.config.state, state)

    def is_revoked(self, ticket_id: str, now: Optional[float] = None) -> bool:
        now = time.time() if now is None else now
        with self._locked():
            return ticket_id in self._state(now)["revoked"]
