"""The portal web app (Flask). ``create_app()`` builds it; ``metalab.portal.wsgi:app`` is what gunicorn serves."""

from __future__ import annotations

import contextlib
import functools
import threading
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar, cast

from flask import Flask, Response, abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from metalab.brokerapi.client import BrokerClient, BrokerError
from metalab.portal.auth import AuthBackend, Identity
from metalab.portal.backups import register_backups
from metalab.portal.forms import (
    ActionForm,
    AdminExtendForm,
    AdminStopForm,
    EnrollForm,
    LoginForm,
    StartForm,
)
from metalab.portal.oidc import make_backend, register_oidc
from metalab.portal.settings import Settings, load_or_create_secret, load_settings
from metalab.portal.signup import register_signup
from metalab.portal.text import human_bytes, human_seconds, human_time, lab_user_of, refusal_title, safe_next

TOKEN_HEADER = "X-Lab-Token"
USER_HEADER = "X-Lab-User"

F = TypeVar("F", bound=Callable[..., Any])
# Whose X-Forwarded-For/-Proto count: nginx on this host. Anyone else's headers are ignored.
TRUSTED_PROXIES = frozenset({"127.0.0.1", "::1"})


class LoopbackProxyFix:
    """ProxyFix for requests from the local nginx only: the client address the login throttling keys on cannot be
    chosen by whoever else reaches the portal's port."""

    def __init__(self, app: Any, hops: int) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops)

    def __call__(self, environ: Dict[str, Any], start_response: Any) -> Any:
        if environ.get("REMOTE_ADDR") in TRUSTED_PROXIES:
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def create_app(settings: Optional[Settings] = None, backend: Optional[AuthBackend] = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    cookie_name = "__Host-metalab" if settings.cookie_secure else "metalab"
    app.config.update(
        SECRET_KEY=load_or_create_secret(settings.secret_key_file),
        SESSION_COOKIE_NAME=cookie_name,
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # Strict would drop the cookie on links into /user/NAME/ from mail or chat
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # the token is bound to the session, which expires by itself
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if settings.proxy_hops:
        app.wsgi_app = LoopbackProxyFix(app.wsgi_app, settings.proxy_hops)  # type: ignore[method-assign]
    CSRFProtect(app)
    broker = BrokerClient(settings.broker_socket)
    auth = backend or make_backend(settings.auth, settings.oidc, broker)
    app.extensions["metalab"] = {"settings": settings, "broker": broker, "auth": auth}
    app.jinja_env.filters["bytes"] = human_bytes
    app.jinja_env.filters["seconds"] = human_seconds
    app.jinja_env.filters["when"] = human_time
    # Calls that may wait (password hashing, the guard lock, podman run): a few per worker process at a time, so the
    # worker's other threads stay free for /auth/check, which every JupyterLab request of every user goes through.
    slow_lane = threading.BoundedSemaphore(settings.slow_requests)

    # -- helpers ------------------------------------------------------------------------------------------

    def identity() -> Optional[Identity]:
        try:
            return Identity(session["user"], session["ticket"], bool(session["admin"]), int(session["expires"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_login(message: Optional[str] = None) -> Response:
        session.clear()
        if message:
            flash(message, "info")
        return cast(Response, redirect(url_for("login", next=request.full_path.rstrip("?"))))

    def login_required(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ident = identity()
            if ident is None:
                return to_login()
            try:
                return view(ident, *args, **kwargs)
            except BrokerError as exc:
                if exc.code == "unauthorized":
                    return to_login(str(exc))
                raise

        return cast(F, wrapper)

    def admin_required(view: F) -> F:
        @functools.wraps(view)
        def wrapper(ident: Identity, *args: Any, **kwargs: Any) -> Any:
            if not ident.admin:
                abort(403, "only lab admins may see this page")
            return view(ident, *args, **kwargs)

        return login_required(cast(F, wrapper))

    def slow(view: F) -> F:
        """For views that call the broker for something slow: a free place in the slow lane, or 503 at once."""

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                return view(*args, **kwargs)
            if not slow_lane.acquire(blocking=False):
                page = render_template(
                    "error.html",
                    heading="The lab is busy",
                    message="too many logins, starts and stops at this moment; try again in a few seconds",
                )
                return Response(page, 503, headers={"Retry-After": "5"}, mimetype="text/html")
            try:
                return view(*args, **kwargs)
            finally:
                slow_lane.release()

        return cast(F, wrapper)

    def own_user_only(ident: Identity) -> None:
        claimed = request.values.get("user")
        if claimed is not None and claimed != ident.user:
            abort(403, f"you are logged in as {ident.user}; you cannot act for {claimed}")

    def lab_url(user: str) -> str:
        return settings.lab_path.format(user=user)

    def start_identity(ident: Identity) -> None:
        session.clear()
        session.permanent = True
        session.update(user=ident.user, ticket=ident.ticket, admin=ident.admin, expires=ident.expires)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.context_processor
    def globals_for_templates() -> Dict[str, Any]:
        return {"me": identity(), "title": settings.title, "logout_form": ActionForm()}

    # -- errors -------------------------------------------------------------------------------------------

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Tuple[str, int]:
        return render_template("error.html", heading="This form has expired", message=exc.description), 400

    @app.errorhandler(BrokerError)
    def broker_error(exc: BrokerError) -> Tuple[str, int]:
        status = {"forbidden": 403, "bad-request": 400, "refused": 409, "busy": 409, "unauthorized": 401}.get(
            exc.code, 503
        )
        heading = "The lab service is not available" if status == 503 else "Not possible"
        return render_template("error.html", heading=heading, message=str(exc)), status

    @app.errorhandler(403)
    def forbidden(exc: Any) -> Tuple[str, int]:
        return render_template("error.html", heading="Not allowed", message=exc.description), 403

    # -- log in and out -----------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    @slow
    def login() -> Any:
        form = LoginForm()
        if request.method == "GET":
            form.next.data = safe_next(request.args.get("next"))
        if identity() is not None and request.method == "GET":
            return redirect(safe_next(form.next.data))
        if form.validate_on_submit():
            try:
                ident = auth.login(form.username.data or "", form.password.data or "", request.remote_addr or "")
            except BrokerError as exc:
                if exc.code in ("invalid", "locked", "bad-request"):
                    status = 429 if exc.code == "locked" else 401
                    return render_template("login.html", form=form, error=str(exc), auth=auth), status
                raise
            start_identity(ident)
            return redirect(safe_next(form.next.data))
        return render_template("login.html", form=form, error=None, auth=auth)

    @app.post("/logout")
    def logout() -> Any:
        form = ActionForm()
        if not form.validate():
            abort(400)
        ident = identity()
        if ident is not None:
            with contextlib.suppress(BrokerError):  # the cookie goes anyway; the ticket expires by itself
                auth.logout(ident)
        session.clear()
        flash("logged out", "info")
        return redirect(url_for("login"))

    @app.route("/enroll/<token>", methods=["GET", "POST"])
    @slow
    def enroll(token: str) -> Any:
        try:
            info = broker.call("enroll.check", token=token)
        except BrokerError as exc:
            if exc.code in ("invalid", "bad-request"):
                return render_template("error.html", heading="Enrollment link not valid", message=str(exc)), 404
            raise
        form = EnrollForm()
        error = None
        if form.validate_on_submit():
            try:
                result = broker.call("enroll.finish", token=token, password=form.password.data)
            except BrokerError as exc:
                if exc.code not in ("invalid", "bad-password"):
                    raise
                error = str(exc)
            else:
                start_identity(Identity.from_broker(result))
                flash("your password is set", "info")
                return redirect(url_for("my_lab"))
        elif form.errors:
            error = "; ".join(m for msgs in form.errors.values() for m in msgs)
        return render_template("enroll.html", form=form, user=info["user"], expires=info["expires"], error=error)

    # -- my lab -------------------------------------------------------------------------------------------

    @app.get("/")
    @login_required
    def my_lab(ident: Identity) -> Any:
        status = broker.call("status", ticket=ident.ticket)
        return render_template(
            "lab.html",
            status=status,
            runtime=status.get("runtime"),
            start_form=StartForm(),
            stop_form=ActionForm(),
            lab_url=lab_url(ident.user),
        )

    @app.get("/api/status")
    @login_required
    def api_status(ident: Identity) -> Any:
        return jsonify(broker.call("status", ticket=ident.ticket))

    @app.post("/start")
    @slow
    @login_required
    def start(ident: Identity) -> Any:
        own_user_only(ident)
        form = StartForm()
        if not form.validate_on_submit():
            abort(400)
        try:
            broker.call("start", ticket=ident.ticket, kind=form.kind.data)
        except BrokerError as exc:
            if exc.code not in ("refused", "busy"):
                raise
            heading, kind = refusal_title(str(exc))
            return render_template("refused.html", heading=heading, kind=kind, message=str(exc)), 409
        return redirect(url_for("my_lab"))

    @app.post("/stop")
    @slow
    @login_required
    def stop(ident: Identity) -> Any:
        own_user_only(ident)
        if not ActionForm().validate_on_submit():
            abort(400)
        broker.call("stop", ticket=ident.ticket)
        return redirect(url_for("my_lab"))

    register_backups(app, broker, login_required, slow, own_user_only)
    register_oidc(app, auth, start_identity, slow)
    register_signup(app, broker, login_required, slow, start_identity)

    # -- the front door's auth_request --------------------------------------------------------------------

    @app.get("/auth/check")
    def auth_check() -> Any:
        """200 + X-Lab-Token when the session's user owns the /user/NAME/ of X-Original-URI; 401 without a
        (valid) session, 403 for anyone else's path. Never a redirect: nginx turns 401 into one to /login."""
        ident = identity()
        if ident is None:
            return Response("no session\n", 401, mimetype="text/plain")
        owner = lab_user_of(request.headers.get("X-Original-URI"))
        if owner is None or owner != ident.user:
            return Response("not your lab\n", 403, mimetype="text/plain")
        try:
            result = broker.call("token", ticket=ident.ticket)
        except BrokerError as exc:
            if exc.code == "unauthorized":
                return Response("session ended\n", 401, mimetype="text/plain")
            return Response("lab service unavailable\n", 503, mimetype="text/plain")
        response = Response("", 200, mimetype="text/plain")
        response.headers[USER_HEADER] = ident.user
        if result.get("token"):
            response.headers[TOKEN_HEADER] = result["token"]
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- admin --------------------------------------------------------------------------------------------

    @app.get("/admin")
    @admin_required
    def admin(ident: Identity) -> Any:
        data = broker.call("admin.list", ticket=ident.ticket)
        return render_template("admin.html", data=data, stop_form=AdminStopForm(), extend_form=AdminExtendForm())

    @app.post("/admin/stop")
    @slow
    @admin_required
    def admin_stop(ident: Identity) -> Any:
        form = AdminStopForm()
        if not form.validate_on_submit():
            abort(400)
        result = broker.call("admin.stop", ticket=ident.ticket, target=form.target.data)
        flash(f"stopped the runtime of {form.target.data}" if result.get("stopped") else result.get("message"), "info")
        return redirect(url_for("admin"))

    @app.post("/admin/extend")
    @slow
    @admin_required
    def admin_extend(ident: Identity) -> Any:
        form = AdminExtendForm()
        if not form.validate_on_submit():
            abort(400)
        try:
            info = broker.call(
                "admin.extend", ticket=ident.ticket, target=form.target.data, duration=form.duration.data
            )
        except BrokerError as exc:
            if exc.code not in ("refused", "bad-request"):
                raise
            flash(str(exc), "error")
        else:
            flash(f"extended the runtime of {info['user']}: {human_seconds(info['time_left_seconds'])} left", "info")
        return redirect(url_for("admin"))

    @app.get("/healthz")
    def healthz() -> Any:
        return Response("ok\n", 200, mimetype="text/plain")

    return app
