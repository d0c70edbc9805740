"""Sign-up requests and password changes (issue 19): the broker ops ``signup.request`` and ``password.change``, and
the ``metalab-broker requests|signup-approve|signup-deny|reset`` commands labctl runs (playbooks/labctl/signup.yml).

A sign-up request touches nothing privileged: the broker only appends ``{name, email, reason}`` to its own file
``requests.json`` (beside its state file, root 0600, replaced atomically under an exclusive ``flock``). Accounts,
quotas and the inventory change only when an admin approves (``labctl users approve``). Limits: a name must be a
valid lab user name that is neither a lab user, a portal account nor pending; at most ``PER_CLIENT`` requests per
client address (IPv6: per /64) and ``GLOBAL`` from everyone per hour, and at most ``MAX_PENDING`` pending requests.

``password.change`` checks the current password (with the login throttling), applies the password rules, and sets
the new one: the generation goes up, so every other session of hers ends; the caller gets a fresh ticket.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from metalab.host.broker.auth import AuthError, AuthStore, client_key
from metalab.host.broker.config import BrokerConfig
from metalab.host.broker.errors import ApiError
from metalab.host.guard.config import load_config as load_guard_config
from metalab.host.guard.policy import parse_duration
from metalab.rules import RESERVED_NAMES, USER_NAME_HELP, email_problem, is_user_name

log = logging.getLogger("metalab.broker")

MAX_REASON = 500
PER_CLIENT = 3  # requests per client address per WINDOW
GLOBAL = 30  # requests from everyone per WINDOW
MAX_PENDING = 50
WINDOW = 3600
STATUSES = ("pending", "approved", "denied")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def requests_path(config: BrokerConfig) -> str:
    return os.path.join(os.path.dirname(config.state), "requests.json")


def check_request(name: Any, email: Any, reason: Any) -> Dict[str, str]:
    """The form's fields, cleaned; ApiError ``bad-request`` naming the first bad field."""
    if not isinstance(name, str) or not is_user_name(name.strip()):
        raise ApiError("bad-request", f"name: {USER_NAME_HELP}")
    name = name.strip()
    if name in RESERVED_NAMES:
        raise ApiError("bad-request", f"name: {name!r} is reserved; choose another")
    email = email.strip() if isinstance(email, str) else email
    problem = email_problem(email)
    if problem:
        raise ApiError("bad-request", problem)
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ApiError("bad-request", f"reason: at most {MAX_REASON} characters")
    reason = " ".join(reason.split())  # one line, no control characters
    return {"name": name, "email": str(email), "reason": reason}


class RequestStore:
    """The requests file: ``{"requests": {NAME: {...}}, "recent": [{"at": EPOCH, "client": KEY}]}``."""

    def __init__(self, config: BrokerConfig, known: Callable[[], List[str]]) -> None:
        self.path = requests_path(config)
        self.known = known  # names that are taken: lab users of the guard, portal accounts, admins
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Dict[str, Any]]:
        """The file's data under the lock; written back when the block ends without an exception."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with self._thread_lock:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = AuthStore._read(self.path)
                if not isinstance(data.get("requests"), dict):
                    data["requests"] = {}
                if not isinstance(data.get("recent"), list):
                    data["recent"] = []
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    AuthStore._write(self.path, data)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def add(self, name: Any, email: Any, reason: Any, client: str = "", now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        entry = check_request(name, email, reason)
        address = client_key(client)
        taken = set(self.known())
        with self._locked() as data:
            data["recent"] = [r for r in data["recent"] if isinstance(r, dict) and now - r.get("at", 0) < WINDOW]
            if sum(1 for r in data["recent"] if r.get("client") == address) >= PER_CLIENT:
                raise ApiError("refused", "too many requests from this address; try again in an hour")
            if len(data["recent"]) >= GLOBAL:
                raise ApiError("refused", "too many requests at the moment; try again in an hour")
            pending = [r for r in data["requests"].values() if r.get("status") == "pending"]
            if len(pending) >= MAX_PENDING:
                raise ApiError("refused", "too many requests are waiting for an answer; try again later")
            old = data["requests"].get(entry["name"])
            if entry["name"] in taken or (old and old.get("status") != "denied"):
                raise ApiError("bad-request", f"name: {entry['name']!r} is already taken; choose another")
            record = dict(entry, status="pending", requested=_iso(now), client=address)
            data["requests"][entry["name"]] = record
            data["recent"].append({"at": now, "client": address})
        log.info("sign-up request for %s from %s", entry["name"], address)
        return {"name": entry["name"], "status": "pending"}

    def list(self, everything: bool = False) -> List[Dict[str, Any]]:
        with self._locked() as data:
            rows = [dict(r) for r in data["requests"].values() if isinstance(r, dict)]
        rows = [r for r in rows if everything or r.get("status") == "pending"]
        return sorted(rows, key=lambda r: (str(r.get("requested", "")), str(r.get("name", ""))))

    def decide(self, name: str, status: str, reason: str = "", now: Optional[float] = None) -> Dict[str, Any]:
        """Mark NAME's pending request approved or denied; returns the record. Refused when there is none."""
        now = time.time() if now is None else now
        with self._locked() as data:
            record = data["requests"].get(name)
            if not isinstance(record, dict) or record.get("status") != "pending":
                state = f"it is {record.get('status')}" if isinstance(record, dict) else "there is none"
                raise ApiError("bad-request", f"no pending sign-up request for {name!r} ({state})")
            record.update(status=status, decided=_iso(now), decision_reason=" ".join(reason.split()))
            return dict(record)

    def pending(self, name: str) -> Dict[str, Any]:
        with self._locked() as data:
            record = data["requests"].get(name)
        if not isinstance(record, dict) or record.get("status") != "pending":
            raise ApiError("bad-request", f"no pending sign-up request for {name!r}")
        return dict(record)


# -- broker ops -------------------------------------------------------------------------------------------------


def _known_names(broker: Any) -> List[str]:
    names = set(broker.config.admins) | set(broker.auth._passwords())
    with contextlib.suppress(Exception):  # no guard config (yet): the portal accounts still count
        names |= set(load_guard_config(broker.config.guard_config).users)
    return sorted(names)


def signup_ops(broker: Any) -> Dict[str, Callable[[Dict[str, Any]], Any]]:
    """The ops to add to the broker's table (metalab.host.broker.service.Broker.ops)."""
    store = RequestStore(broker.config, lambda: _known_names(broker))

    def op_signup_request(request: Dict[str, Any]) -> Dict[str, Any]:
        client = request.get("client")
        return store.add(
            request.get("name"), request.get("email"), request.get("reason"), client if isinstance(client, str) else ""
        )

    def op_password_change(request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = broker._ticket(request)
        current, new = request.get("current"), request.get("new")
        if not isinstance(current, str) or not current or len(current) > 4096:
            raise ApiError("bad-request", "current: give your current password")
        if not isinstance(new, str) or not new or len(new) > 4096:
            raise ApiError("bad-request", "new: give a new password")
        client = request.get("client")
        try:
            broker.auth.login(ticket.user, current, client if isinstance(client, str) else "")
        except AuthError as exc:
            if exc.code == "invalid":
                raise ApiError("invalid", "the current password is not right; nothing changed") from None
            raise
        if new == current:
            raise ApiError("bad-password", "the new password is the current one; choose another")
        generation = broker.auth.set_password(ticket.user, new)
        log.info("%s changed her portal password (other sessions end)", ticket.user)
        return dict(broker._login_result(ticket.user, generation), changed=True)

    return {"signup.request": op_signup_request, "password.change": op_password_change}


# -- metalab-broker commands ------------------------------------------------------------------------------------

COMMANDS = ("requests", "signup-approve", "signup-deny", "reset", "mail-test")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("requests", help="sign-up requests (pending ones; --all: also approved and denied)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    for name, text in (
        ("signup-approve", "USER's request: enrollment link, mark approved, mail it (JSON on stdin: smtp, base_url)"),
        ("signup-deny", "USER's request: mark denied, mail her (JSON on stdin: smtp)"),
        ("reset", "USER's password stops working, her sessions end; a new enrollment link (JSON on stdin)"),
        ("mail-test", "send a test mail to USER (an address) through the relay (JSON on stdin: smtp)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("user")
        p.add_argument("--reason", default="")
        p.add_argument("--ttl")
        p.add_argument("--email", help="reset: where to mail the link")


def _stdin_options() -> Dict[str, Any]:
    text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not text.strip():
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("stdin: expected a JSON object {smtp, base_url}")
    return data


def _mail(options: Dict[str, Any], to: str, subject: str, body: str) -> Dict[str, Any]:
    from metalab.host.broker import mail

    smtp = options.get("smtp")
    if not smtp or not to:
        return {"mailed": False, "mail_error": None}
    try:
        mail.send(mail.parse_smtp(smtp), to, subject, body)
    except mail.MailError as exc:
        log.error("mail to %s failed: %s", to, exc)
        return {"mailed": False, "mail_error": str(exc)}
    return {"mailed": True, "mail_error": None}


def _link_text(user: str, url: str, expires: str, title: str) -> str:
    return (
        f"Hello {user},\n\nyour access to {title} is ready. Set your password with this link (single use, valid "
        f"until {expires} UTC):\n\n{url}\n\nThen log in with the name {user} and that password.\n"
    )


def dispatch(args: argparse.Namespace, config: BrokerConfig, known_user: Callable[[BrokerConfig, str], None]) -> int:
    store = AuthStore(config)
    requests = RequestStore(config, lambda: [])
    if args.command == "requests":
        rows = requests.list(args.all)
        if args.json:
            print(json.dumps(rows, sort_keys=True))
        else:
            for r in rows:
                print(f"{r['name']}  {r['email']}  {r['status']}  {r['requested']}  {r.get('reason', '')}")
        return 0
    options = _stdin_options()
    base_url = str(options.get("base_url") or "").rstrip("/")
    ttl = parse_duration(args.ttl) if args.ttl else None
    title = str(options.get("title") or "the lab")
    if args.command == "mail-test":
        result = _mail(options, args.user, f"{title}: test mail", "This is a test mail from metalab-broker.\n")
        print(json.dumps(result, sort_keys=True))
        return 0 if result["mailed"] else 1
    if args.command == "signup-approve":
        record = requests.pending(args.user)
        known_user(config, args.user)  # provisioned: the guard knows her
        info: Dict[str, Any] = store.create_enrollment(args.user, ttl)
        url = f"{base_url}/enroll/{info['token']}"
        requests.decide(args.user, "approved", args.reason)
        result = {"user": args.user, "email": record["email"], "url": url, "expires": info["expires"]}
        body = _link_text(args.user, url, info["expires"], title)
        result.update(_mail(options, record["email"], f"{title}: your access is approved", body))
        print(json.dumps(result, sort_keys=True))
        return 0
    if args.command == "signup-deny":
        record = requests.decide(args.user, "denied", args.reason)
        why = f"\nReason: {record['decision_reason']}\n" if record.get("decision_reason") else ""
        body = f"Hello {args.user},\n\nyour request for access to {title} was not approved.\n{why}"
        result = {"user": args.user, "email": record["email"], "status": "denied"}
        result.update(_mail(options, record["email"], f"{title}: your request", body))
        print(json.dumps(result, sort_keys=True))
        return 0
    if args.command == "reset":
        known_user(config, args.user)
        generation = block_password(store, args.user)
        info = store.create_enrollment(args.user, ttl)
        url = f"{base_url}/enroll/{info['token']}"
        result = {"user": args.user, "url": url, "expires": info["expires"], "generation": generation}
        body = _link_text(args.user, url, info["expires"], title).replace("is ready", "was reset by a lab admin")
        result.update(_mail(options, args.email or "", f"{title}: your password was reset", body))
        print(json.dumps(result, sort_keys=True))
        return 0
    raise AssertionError(args.command)


def block_password(store: AuthStore, user: str, now: Optional[float] = None) -> int:
    """USER's password stops working and her sessions end (the generation goes up); returns the new generation.
    Unlike removing the password, the generation is kept, so tickets from before can never become valid again."""
    now = time.time() if now is None else now
    with store._locked():
        data = store._read(store.config.passwords)
        users = data.setdefault("users", {})
        generation = int(users.get(user, {}).get("generation", 0)) + 1
        users[user] = {"hash": "!reset", "generation": generation, "changed": _iso(now)}
        store._write(store.config.passwords, data)
    return generation
