"""Single sign-on through the portal (Flask test client) with oidc-provider-mock running in-process on loopback and
the real broker checking the ID token: alice gets her lab; an unknown account, a foreign domain and a forged state
get the login page with a message and no session; password logins keep working beside SSO."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import oidc_provider_mock
import pytest
import requests

from metalab.brokerapi.client import BrokerError
from metalab.portal.app import create_app
from metalab.portal.oidc import make_backend
from metalab.portal.oidc_settings import OidcSettings, parse_auth_settings
from metalab.portal.settings import Settings, SettingsError, parse_settings

from .conftest import BASE, Browser, LabEnv


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread(require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


def sso_browser(env: LabEnv, issuer: str, auth: tuple = ("password", "oidc")) -> Browser:
    env.broker_data["oidc"] = {"issuer": issuer, "client_id": "metalab-portal", "allowed_domains": ["lab.test"]}
    env.start_broker()
    secret = env.tmp / "oidc-client-secret"
    secret.write_text("not-so-secret\n")
    settings = Settings(
        broker_socket=env.broker_data["socket"],
        secret_key_file=str(env.tmp / "portal" / "secret_key"),
        auth=auth,
        oidc=OidcSettings(issuer=issuer, client_id="metalab-portal", client_secret_file=str(secret), label="Lab ID"),
    )
    return Browser(create_app(settings).test_client())


def sign_in(browser: Browser, sub: str, next_url: str = "/") -> object:
    """Log in page -> provider (its form: the subject) -> callback; the callback's response."""
    page = browser.get("/login").get_data(as_text=True)
    assert "Log in with Lab ID" in page
    start = browser.get(f"/login/oidc?next={next_url}")
    assert start.status_code == 302
    at_provider = start.headers["Location"]
    assert "code_challenge=" in at_provider and "nonce=" in at_provider and "state=" in at_provider
    answer = requests.post(at_provider, data={"sub": sub}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}" == BASE and back.path == "/login/oidc/callback"
    return browser.get(f"{back.path}?{back.query}")


def test_alice_signs_in_and_lands_in_her_lab(env: LabEnv, provider: str) -> None:
    browser = sso_browser(env, provider)
    response = sign_in(browser, "alice@lab.test", "/backups")
    assert response.status_code == 302 and response.headers["Location"] == "/backups"
    page = browser.get("/").get_data(as_text=True)
    assert "My lab" in page and "alice" in page
    # passwords keep working beside single sign-on
    assert env.browser().login("bob").status_code == 302


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ("mallory@lab.test", "your account mallory@lab.test is not a user of this lab"),
        ("alice@evil.test", "your account alice@evil.test is not from a domain this lab accepts"),
    ],
)
def test_an_account_that_is_no_lab_user_is_refused_without_a_session(env: LabEnv, provider: str, sub: str,
                                                                      message: str) -> None:  # fmt: skip
    browser = sso_browser(env, provider)
    response = sign_in(browser, sub)
    assert response.status_code == 403 and message in response.get_data(as_text=True)
    assert browser.get("/").headers["Location"].startswith("/login")


def test_a_callback_with_another_state_is_refused(env: LabEnv, provider: str) -> None:
    browser = sso_browser(env, provider)
    browser.get("/login/oidc")
    response = browser.get("/login/oidc/callback?code=abc&state=forged")
    assert response.status_code == 403 and "does not belong to this browser" in response.get_data(as_text=True)
    assert browser.get("/").headers["Location"].startswith("/login")


def test_sso_only_hides_the_password_form_and_refuses_passwords(env: LabEnv, provider: str) -> None:
    browser = sso_browser(env, provider, auth=("oidc",))
    page = browser.get("/login").get_data(as_text=True)
    assert "Log in with Lab ID" in page and 'name="password"' not in page
    # no form means no CSRF token to post with; the backend refuses passwords as well
    response = browser.post("/login", {"username": "alice", "password": "alice-secret-1"}, csrf_from=None)
    assert response.status_code == 400 and browser.get("/").headers["Location"].startswith("/login")
    with pytest.raises(BrokerError, match="logs in with Lab ID only"):
        backend = make_backend(("oidc",), OidcSettings("https://idp", "x", "/s", label="Lab ID"), env.client())
        backend.login("alice", "x")


def test_password_only_has_no_sso(env: LabEnv) -> None:
    browser = env.browser()
    assert "Log in with" not in browser.get("/login").get_data(as_text=True)
    assert browser.get("/login/oidc").status_code == 404


def test_settings_errors_name_the_entry() -> None:
    for data, expected in (
        ({"auth": ["kerberos"]}, "auth: expected"),
        ({"auth": ["oidc"]}, "oidc: auth includes oidc"),
        ({"auth": ["oidc"], "oidc": {"issuer": "https://idp", "client_id": "x"}}, "oidc.client_secret_file"),
        (
            {
                "auth": ["oidc"],
                "oidc": {"issuer": "https://idp", "client_id": "x", "client_secret_file": "/s", "scopes": ["email"]},
            },
            "oidc.scopes",
        ),  # fmt: skip
    ):
        with pytest.raises(SettingsError, match=expected):
            parse_settings(data)
    auth, oidc = parse_auth_settings("password", None)
    assert auth == ("password",) and oidc is None
    settings = parse_settings(
        {"auth": ["password", "oidc"], "oidc": {"issuer": "https://idp/", "client_id": "x", "client_secret_file": "/s"}}
    )
    assert settings.oidc is not None and settings.oidc.issuer == "https://idp" and "openid" in settings.oidc.scopes


def test_default_settings_are_passwords_only(tmp_path: Path) -> None:
    assert parse_settings({}).auth == ("password",)
