"""Portal settings: a JSON file (``$METALAB_PORTAL_CONFIG``, default /etc/metalab/portal.json), all keys optional."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from metalab.portal.oidc_settings import OidcSettings, parse_auth_settings

DEFAULT_CONFIG = "/etc/metalab/portal.json"
CONFIG_ENV = "METALAB_PORTAL_CONFIG"


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    broker_socket: str = "/run/metalab/broker.sock"
    secret_key_file: str = "/var/lib/metalab-portal/secret_key"
    cookie_secure: bool = True  # only false for local development over plain http
    session_hours: int = 12  # the cookie's lifetime; the broker's ticket_ttl ends a session as well
    lab_path: str = "/user/{user}/lab"  # where "Open JupyterLab" points (the front door's location)
    title: str = "metalab"
    proxy_hops: int = 1  # reverse proxies in front (nginx) whose X-Forwarded-For/-Proto are trusted
    # Logins, starts, stops and enrollments in progress at a time in one worker process; more are answered 503 at
    # once, so the worker's other threads always serve /auth/check and the pages (gunicorn --threads above this).
    slow_requests: int = 4
    auth: Tuple[str, ...] = ("password",)  # "password" and/or "oidc" (metalab.portal.oidc)
    oidc: Optional[OidcSettings] = None
    signup: bool = True  # the login page's "Request access" form (metalab.portal.signup); false: no form, 404


def parse_settings(data: Mapping[str, Any]) -> Settings:
    base = Settings()
    known = set(base.__dataclass_fields__)
    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment": the role's ansible_managed line
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"portal config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = {k: data.get(k, getattr(base, k)) for k in known}
    for key in ("broker_socket", "secret_key_file"):
        if not (isinstance(values[key], str) and os.path.isabs(values[key])):
            raise SettingsError(f"portal config: {key}: expected an absolute path")
    if "{user}" not in str(values["lab_path"]):
        raise SettingsError("portal config: lab_path must contain {user}")
    for key, least in (("proxy_hops", 0), ("slow_requests", 1)):
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise SettingsError(f"portal config: {key}: expected an integer >= {least}")
    try:
        values["auth"], values["oidc"] = parse_auth_settings(values["auth"], values["oidc"])
    except ValueError as exc:
        raise SettingsError(f"portal config: {exc}") from None
    if not isinstance(values["signup"], bool):
        raise SettingsError("portal config: signup: expected true or false")
    return Settings(**values)


def load_settings(path: Optional[str] = None) -> Settings:
    path = path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"portal config {path} not found (set {CONFIG_ENV})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"portal config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"portal config {path}: expected a JSON object")
    return parse_settings(data)


def load_or_create_secret(path: str) -> bytes:
    """The cookie signing key: random, 0600, owned by the portal account, kept across restarts (sessions survive)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    with open(path, encoding="ascii") as fh:
        return bytes.fromhex(fh.read().strip())
