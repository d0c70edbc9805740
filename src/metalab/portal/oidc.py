"""Single sign-on with OpenID Connect (issue 19): the authorization-code flow with PKCE, state and nonce (Authlib).

``GET /login/oidc`` sends the browser to the provider with a fresh state, nonce and PKCE verifier kept in the
signed session cookie; ``GET /login/oidc/callback`` checks the state, exchanges the code (with the client secret
and the verifier) for tokens and hands the ID token and the nonce to the broker (``login.oidc``). The portal does
not decide who the user is: the broker verifies the token's signature against the provider's keys, its issuer,
audience, expiry and nonce, and maps it to a present lab user through its own allow-lists (metalab.host.broker.oidc).
A refusal shows the broker's message on the login page and starts no session.

Settings (portal.json): ``auth``: ``["password"]`` (default), ``["oidc"]`` or ``["password", "oidc"]``; ``oidc``:
``{issuer, client_id, client_secret_file, scopes, ca_file, label}``. The redirect URI to register at the provider is
``https://<the lab's name>/login/oidc/callback``.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from flask import Flask, redirect, render_template, request, session, url_for

from metalab.brokerapi.client import BrokerClient, BrokerError
from metalab.portal.auth import AuthBackend, BrokerPasswordBackend, Identity
from metalab.portal.forms import LoginForm
from metalab.portal.oidc_settings import OidcSettings
from metalab.portal.text import safe_next

METADATA_TTL = 600
SESSION_KEY = "oidc_login"
FLOW_TTL = 600  # a login that takes longer at the provider starts over


class OidcBackend(AuthBackend):
    """Single sign-on, optionally beside passwords (``password_form``)."""

    name = "oidc"

    def __init__(self, broker: BrokerClient, settings: OidcSettings, passwords: bool) -> None:
        self.broker = broker
        self.settings = settings
        self.sso_label = settings.label
        self.password_form = passwords
        self._passwords = BrokerPasswordBackend(broker) if passwords else None
        self._metadata: Dict[str, Any] = {}
        self._metadata_at = 0.0
        self._lock = threading.Lock()

    def login(self, username: str, password: str, client: str = "") -> Identity:
        if self._passwords is None:
            raise BrokerError("invalid", f"this lab logs in with {self.sso_label} only")
        return self._passwords.login(username, password, client)

    def logout(self, identity: Identity) -> None:
        self.broker.call("logout", ticket=identity.ticket)

    def _client(self, redirect_uri: Optional[str] = None) -> Any:
        from authlib.integrations.requests_client import OAuth2Session  # the portal venv has it (pinned)

        with open(self.settings.client_secret_file, encoding="utf-8") as fh:
            secret = fh.read().strip()
        client = OAuth2Session(
            self.settings.client_id,
            secret,
            scope=" ".join(self.settings.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            default_timeout=10,
        )
        client.verify = self.settings.ca_file or True
        return client

    def metadata(self) -> Dict[str, Any]:
        """The provider's discovery document (cached for a while)."""
        with self._lock:
            if not self._metadata or time.time() - self._metadata_at > METADATA_TTL:
                with self._client() as client:
                    url = self.settings.issuer + "/.well-known/openid-configuration"
                    response = client.get(url, timeout=10, withhold_token=True)
                    response.raise_for_status()
                    self._metadata, self._metadata_at = response.json(), time.time()
            return self._metadata

    def begin(self, next_url: str) -> Optional[str]:
        from authlib.common.security import generate_token

        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        with self._client(url_for("oidc_callback", _external=True)) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        session[SESSION_KEY] = {"state": state, "nonce": nonce, "verifier": verifier, "next": next_url,
                                "at": int(time.time())}  # fmt: skip
        return str(url)

    def complete(self, params: Mapping[str, str]) -> Identity:
        flow = session.pop(SESSION_KEY, None)
        if not isinstance(flow, dict) or time.time() - flow.get("at", 0) > FLOW_TTL:
            raise BrokerError("invalid", "this sign-in took too long or was not started here; log in again")
        if not secrets.compare_digest(str(params.get("state", "")), flow["state"]):
            raise BrokerError("invalid", "this sign-in does not belong to this browser; log in again")
        if params.get("error"):
            reason = params.get("error_description") or params["error"]
            raise BrokerError("invalid", f"{self.sso_label} did not sign you in ({reason[:200]})")
        code = params.get("code")
        if not code:
            raise BrokerError("invalid", f"{self.sso_label} sent no authorization code; log in again")
        try:
            with self._client(url_for("oidc_callback", _external=True)) as client:
                token = client.fetch_token(
                    self.metadata()["token_endpoint"], code=code, code_verifier=flow["verifier"],
                    grant_type="authorization_code",
                )  # fmt: skip
        except Exception as exc:  # the provider refused the code or cannot be reached: a message, not a 500
            raise BrokerError("failure", f"{self.sso_label} did not complete the sign-in: {str(exc)[:200]}") from None
        id_token = token.get("id_token")
        if not id_token:
            raise BrokerError("invalid", f"{self.sso_label} sent no ID token (is the openid scope allowed?)")
        result = self.broker.call(
            "login.oidc", id_token=id_token, nonce=flow["nonce"], client=request.remote_addr or ""
        )
        return Identity.from_broker(result)

    def next_url(self) -> str:
        flow = session.get(SESSION_KEY)
        return safe_next(flow.get("next") if isinstance(flow, dict) else None)


def make_backend(methods: Tuple[str, ...], oidc: Optional[OidcSettings], broker: BrokerClient) -> AuthBackend:
    if oidc is None or "oidc" not in methods:
        return BrokerPasswordBackend(broker)
    return OidcBackend(broker, oidc, passwords="password" in methods)


def register_oidc(
    app: Flask, auth: AuthBackend, start_identity: Callable[[Identity], None], slow: Callable[[Any], Any]
) -> None:
    """/login/oidc and its callback; both 404 when the portal has no single sign-on."""

    def login_page(error: str, status: int) -> Any:
        form = LoginForm()
        return render_template("login.html", form=form, error=error, auth=auth), status

    @app.get("/login/oidc")
    def oidc_begin() -> Any:
        if not isinstance(auth, OidcBackend):
            return login_page("single sign-on is not configured on this lab", 404)
        try:
            url = auth.begin(safe_next(request.args.get("next")))
        except Exception as exc:  # the provider cannot be reached: say so on the login page
            app.logger.error("oidc: cannot start a sign-in at %s: %s", auth.settings.issuer, exc)
            return login_page(f"{auth.sso_label} cannot be reached right now; try again later", 503)
        return redirect(str(url))

    @app.get("/login/oidc/callback")
    @slow
    def oidc_callback() -> Any:
        if not isinstance(auth, OidcBackend):
            return login_page("single sign-on is not configured on this lab", 404)
        next_url = auth.next_url()
        try:
            ident = auth.complete(request.args)
        except BrokerError as exc:
            session.clear()  # a refused sign-in leaves no session, not even an earlier one
            if exc.code in ("invalid", "bad-request", "forbidden"):
                return login_page(str(exc), 403)
            return login_page(str(exc), 503)
        start_identity(ident)
        return redirect(next_url)
