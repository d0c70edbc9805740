"""The broker's API: one JSON request in, one JSON response out (transport: metalab.host.broker.server).

Requests are ``{"op": NAME, ...}``; responses ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": CODE, "message": TEXT}}``. Every operation on a runtime takes a ``ticket`` and acts
for the ticket's user only; a ``user`` field naming someone else is refused (``forbidden``). Admin operations check
that the ticket's user is in the broker's own ``admins`` list: the portal cannot make anyone an admin.

Error codes: ``bad-request``, ``unauthorized`` (no, bad, expired or revoked ticket), ``forbidden``, ``invalid``
(login or enrollment failed), ``locked``, ``bad-password``, ``refused`` (the guard refused: limits, budgets, no
free GPU; nothing changed), ``busy`` (a start or stop of the same runtime is already in progress; nothing changed),
``failure`` (engine, ledger or config trouble).

``backup_snapshots`` and ``backup_restore`` (metalab.host.broker.backups) show a user her own snapshots (ids and
times, nothing else of the repository) and restore a folder of her own home into a new dated folder in it.

The transport serves every connection in its own thread: a start that waits for the guard lock and ``podman run``
delays nobody's ``token`` or ``status``. A user has at most one start or stop in flight; a second one is answered at
once with ``busy``, so looping them cannot pile up waiting threads here or in the portal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Set

from metalab.host.broker.auth import AuthError, AuthStore, StoreError
from metalab.host.broker.backups import BackupOps
from metalab.host.broker.config import BrokerConfig
from metalab.host.broker.errors import ApiError
from metalab.host.broker.oidc import OidcVerifier
from metalab.host.broker.relay import HomeRelay
from metalab.host.broker.signup import signup_ops
from metalab.host.broker.tickets import Ticket, TicketError, TicketSigner, load_or_create_key
from metalab.host.guard.config import ConfigError, load_config
from metalab.host.guard.engine import EngineError
from metalab.host.guard.files import FileError, read_token
from metalab.host.guard.ledger import LedgerError
from metalab.host.guard.policy import KINDS, WINDOW, Interval, budget_left, parse_duration, start_decision
from metalab.host.guard.sessions import Failure, Lab, Refused
from metalab.rules import USER_NAME

log = logging.getLogger("metalab.broker")


def _listening(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path`` (a stale socket file does not)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
        return True
    except OSError:
        return False


def _str_field(request: Dict[str, Any], key: str, limit: int = 1024) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ApiError("bad-request", f"{key}: expected a non-empty string")
    return value


def _generation(auth: AuthStore, user: str) -> int:
    """The password generation tickets carry; -1 for a user without a password (single sign-on only), so setting a
    first password ends her single sign-on sessions as any password change does."""
    generation = auth.generation(user)
    return -1 if generation is None else generation


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.auth = AuthStore(config)
        self.signer = TicketSigner(load_or_create_key(config.key), config.ticket_ttl)
        self._busy: Set[str] = set()  # users whose runtime has a start or stop in flight
        self._busy_lock = threading.Lock()
        self.backups = BackupOps(config.backup_config)
        self.oidc = OidcVerifier(config.oidc) if config.oidc else None
        self.ops: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            "login": self.op_login,
            "login.oidc": self.op_login_oidc,
            "logout": self.op_logout,
            "whoami": self.op_whoami,
            "status": self.op_status,
            "start": self.op_start,
            "stop": self.op_stop,
            "token": self.op_token,
            "enroll.check": self.op_enroll_check,
            "enroll.finish": self.op_enroll_finish,
            "backup_snapshots": self.op_backup_snapshots,
            "backup_restore": self.op_backup_restore,
            "admin.list": self.op_admin_list,
            "admin.stop": self.op_admin_stop,
            "admin.extend": self.op_admin_extend,
        }
        self.ops.update(signup_ops(self))  # signup.request, password.change (metalab.host.broker.signup)
        # Users homed on another host of a multi-host lab: their runtime ops go there (metalab.host.broker.relay).
        self.relay = HomeRelay(config.channel, config.homes) if config.homes else None

    # -- entry point ------------------------------------------------------------------------------------------

    def handle(self, request: Any) -> Dict[str, Any]:
        op = request.get("op") if isinstance(request, dict) else None
        if not isinstance(op, str) or op not in self.ops:
            return self._error(op, "bad-request", f"unknown operation {op!r}")
        return self.answer(op, lambda: self.ops[op](request))

    def answer(self, op: Any, call: Callable[[], Any]) -> Dict[str, Any]:
        """The response envelope of ``call()``: its result, or its error as code and message."""
        try:
            return {"ok": True, "result": call()}
        except ApiError as exc:
            return self._error(op, exc.code, str(exc))
        except AuthError as exc:
            return self._error(op, exc.code, str(exc))
        except Refused as exc:
            return self._error(op, "refused", str(exc))
        except (Failure, EngineError, LedgerError, ConfigError, FileError, StoreError, OSError) as exc:
            log.error("%s: %s", op, exc)
            return self._error(op, "failure", str(exc))

    @staticmethod
    def _error(op: Any, code: str, message: str) -> Dict[str, Any]:
        if code in ("unauthorized", "forbidden", "locked"):
            log.warning("%s refused (%s): %s", op, code, message)
        return {"ok": False, "error": {"code": code, "message": message}}

    # -- helpers ----------------------------------------------------------------------------------------------

    def _identity(self, request: Dict[str, Any]) -> Ticket:
        try:
            ticket = self.signer.verify(request.get("ticket"))
        except TicketError as exc:
            raise ApiError("unauthorized", f"not logged in ({exc}); log in again") from None
        if _generation(self.auth, ticket.user) != ticket.generation or self.auth.is_revoked(ticket.ticket_id):
            raise ApiError("unauthorized", "this session has ended (logged out or password changed); log in again")
        return ticket

    def _ticket(self, request: Dict[str, Any]) -> Ticket:
        """The caller's identity, from the ticket only. A ``user`` field naming anyone else is refused."""
        ticket = self._identity(request)
        claimed = request.get("user")
        if claimed is not None and claimed != ticket.user:
            raise ApiError("forbidden", f"a session of {ticket.user} cannot act for {claimed!r}")
        return ticket

    def _admin(self, request: Dict[str, Any]) -> Ticket:
        ticket = self._identity(request)
        if ticket.user not in self.config.admins:
            raise ApiError("forbidden", f"{ticket.user} is not a lab admin")
        return ticket

    @contextlib.contextmanager
    def _runtime_change(self, user: str, actor: str) -> Iterator[Lab]:
        """The guard's Lab for a start or stop of USER's runtime. At most one per runtime in flight: a second one is
        refused at once (``busy``)."""
        with self._busy_lock:
            if user in self._busy:
                raise ApiError(
                    "busy", f"a start or stop of the runtime of {user} is already in progress; wait until it finishes"
                )
            self._busy.add(user)
        try:
            lab = self._lab(actor)
            try:
                yield lab
            finally:
                lab.close()
        finally:
            with self._busy_lock:
                self._busy.discard(user)

    def _lab(self, actor: str) -> Lab:
        return Lab(load_config(self.config.guard_config), actor=actor)

    def _login_result(self, user: str, generation: int) -> Dict[str, Any]:
        ticket = self.signer.mint(user, generation)
        info = self.signer.verify(ticket)
        return {"ticket": ticket, "user": user, "admin": user in self.config.admins, "expires": int(info.expires)}

    def _quota(self, user: str) -> Optional[Dict[str, int]]:
        """Home quota used/total from the quota file the storage role keeps (``{"user": {"used_bytes", ...}}``)."""
        if not self.config.quota_file:
            return None
        try:
            with open(self.config.quota_file, encoding="utf-8") as fh:
                entry = json.load(fh).get(user)
            return {"used_bytes": int(entry["used_bytes"]), "limit_bytes": int(entry["limit_bytes"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    # -- authentication ---------------------------------------------------------------------------------------

    def op_login(self, request: Dict[str, Any]) -> Dict[str, Any]:
        user = _str_field(request, "user", 64)
        password = _str_field(request, "password", 4096)
        if not USER_NAME.fullmatch(user):  # fullmatch: the pattern's "$" would accept "alice\n"
            user = "invalid-name"  # still costs a full hash, like any unknown name
        client = request.get("client")
        account = self.auth.login(user, password, client if isinstance(client, str) else "")
        log.info("login of %s", account.user)
        return self._login_result(account.user, account.generation)

    def op_login_oidc(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """Single sign-on: an ID token from the portal's code exchange, checked here (metalab.host.broker.oidc)."""
        if self.oidc is None:
            raise ApiError("bad-request", "single sign-on is not configured on this lab")
        claims = self.oidc.verify(_str_field(request, "id_token", 16384), _str_field(request, "nonce", 256))
        users = load_config(self.config.guard_config).users
        user = self.oidc.lab_user(claims, lambda name: name in users or name in self.config.homes)
        log.info("single sign-on of %s (subject %s)", user, str(claims.get("sub"))[:128])
        return self._login_result(user, _generation(self.auth, user))

    def op_logout(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._ticket(request)
        self.auth.revoke(ticket.ticket_id, ticket.expires)
        return {"user": ticket.user, "logged_out": True}

    def op_whoami(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._ticket(request)
        return {"user": ticket.user, "admin": ticket.user in self.config.admins, "expires": int(ticket.expires)}

    def op_enroll_check(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return self.auth.check_enrollment(_str_field(request, "token", 256))

    def op_enroll_finish(self, request: Dict[str, Any]) -> Dict[str, Any]:
        account = self.auth.finish_enrollment(_str_field(request, "token", 256), _str_field(request, "password", 4096))
        log.info("%s set a password through an enrollment link", account.user)
        return self._login_result(account.user, account.generation)

    # -- the caller's own runtime -----------------------------------------------------------------------------

    def _remote(self, user: str, op: str, **fields: Any) -> Optional[Dict[str, Any]]:
        """The answer of USER's home host when she is homed on another host; None when she is homed here."""
        if self.relay is None or user not in self.config.homes:
            return None
        return self.relay.call(user, op, **fields)

    def op_status(self, request: Dict[str, Any]) -> Dict[str, Any]:
        name = self._ticket(request).user
        remote = self._remote(name, "status")
        if remote is not None:
            return dict(remote, admin=name in self.config.admins)
        return self.status_of(name)

    def status_of(self, name: str) -> Dict[str, Any]:
        """Runtime, limits and budgets of NAME, a user homed on this host."""
        lab = self._lab(f"portal:{name}")
        try:
            now = time.time()
            user = lab.config.users.get(name)
            runtime = next((s for s in lab.status(now) if s["user"] == name), None)
            rt = lab.config.runtime
            sock = os.path.join(rt.socket_root, name, "jupyter.sock")
            if runtime and runtime.get("state") == "running" and not _listening(sock):
                # The container runs, but JupyterLab is not listening yet: "Open JupyterLab" would only show the
                # front door's error page. The portal page reloads itself while a runtime is starting.
                runtime = dict(runtime, state="starting")
            kinds: Dict[str, Any] = {}
            if user is not None:
                rows = lab.ledger.sessions_since(now - WINDOW, users=[name])
                for kind in KINDS:
                    if kind == "gpu" and not (user.gpu and lab.config.runtime.gpus):
                        continue
                    past = [Interval(r.started, r.ended) for r in rows if r.kind == kind]
                    left = budget_left(user.policy, kind, past, now)
                    decision = start_decision(user.policy, kind, past, now)
                    kinds[kind] = {
                        "limit_seconds": user.policy.limit(kind),
                        "budget_seconds": user.policy.budget(kind),
                        "budget_left_seconds": None if left is None else int(left),
                        "can_start": decision.allowed,
                        "message": decision.message,
                    }
            gpus_total = len(lab.config.runtime.gpus)
            return {
                "user": name,
                "admin": name in self.config.admins,
                "host": lab.config.host,
                "lab_user": user is not None,
                "kinds": kinds,
                "gpus_total": gpus_total,
                "gpus_free": len(lab.free_gpus()) if gpus_total else 0,
                "runtime": runtime,
                "quota": self._quota(name),
                "backups": self.backups.configured,
                "now": int(now),
            }
        finally:
            lab.close()

    def op_start(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._ticket(request)
        kind = request.get("kind", "cpu")
        if kind not in KINDS:
            raise ApiError("bad-request", f"kind: expected cpu or gpu, got {kind!r}")
        remote = self._remote(ticket.user, "start", kind=kind)
        return remote if remote is not None else self.start_of(ticket.user, kind)

    def start_of(self, name: str, kind: str, actor: str = "portal") -> Dict[str, Any]:
        with self._runtime_change(name, f"{actor}:{name}") as lab:
            return lab.start(name, kind)

    def op_stop(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._ticket(request)
        remote = self._remote(ticket.user, "stop")
        return remote if remote is not None else self.stop_of(ticket.user)

    def stop_of(self, name: str, actor: str = "portal") -> Dict[str, Any]:
        with self._runtime_change(name, f"{actor}:{name}") as lab:
            return lab.stop(name, "user")

    def op_token(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """The caller's JupyterLab token (for the front door's auth_request); null while no runtime runs."""
        ticket = self._ticket(request)
        remote = self._remote(ticket.user, "token")
        return remote if remote is not None else self.token_of(ticket.user)

    def token_of(self, name: str) -> Dict[str, Any]:
        guard = load_config(self.config.guard_config)
        if name not in guard.users:
            return {"user": name, "token": None}
        return {"user": name, "token": read_token(guard.runtime.token_dir, name)}

    # -- the caller's own backups ----------------------------------------------------------------------------

    def op_backup_snapshots(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return self.backups.snapshots(self._ticket(request).user)

    def op_backup_restore(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._ticket(request)
        return self.backups.restore(ticket.user, request.get("snapshot"), request.get("path"))

    # -- admin ------------------------------------------------------------------------------------------------

    def op_admin_list(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._admin(request)
        lab = self._lab(f"portal-admin:{ticket.user}")
        try:
            gpus = lab.config.runtime.gpus
            return {
                "host": lab.config.host,
                "runtimes": lab.status(),
                "users": sorted(lab.config.users),
                "gpus_total": len(gpus),
                "gpus_free": len(lab.free_gpus()) if gpus else 0,
            }
        finally:
            lab.close()

    def op_admin_stop(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._admin(request)
        target = _str_field(request, "target", 64)
        with self._runtime_change(target, f"portal-admin:{ticket.user}") as lab:
            return lab.stop(target, "admin")

    def op_admin_extend(self, request: Dict[str, Any]) -> Dict[str, Any]:
        ticket = self._admin(request)
        target = _str_field(request, "target", 64)
        try:
            seconds = parse_duration(request.get("duration"))
        except ValueError as exc:
            raise ApiError("bad-request", str(exc)) from None
        lab = self._lab(f"portal-admin:{ticket.user}")
        try:
            return lab.extend(target, seconds)
        finally:
            lab.close()
