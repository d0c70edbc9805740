"""Sign-up form and Account page (issue 19) through Flask's test client, against a real broker on a unix socket."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict

import pytest

from metalab.host.broker import signup

from .conftest import PASSWORDS, Browser, LabEnv


def requests_file(env: LabEnv) -> Path:
    return Path(env.broker_data["state"]).parent / "requests.json"


def stored(env: LabEnv) -> Dict[str, Any]:
    path = requests_file(env)
    return json.loads(path.read_text())["requests"] if path.exists() else {}


def ask(browser: Browser, name: str, email: str, reason: str = "thesis on protein folding", **kw: Any) -> Any:
    return browser.post("/signup", {"name": name, "email": email, "reason": reason}, csrf_from="/signup", **kw)


def test_login_page_offers_request_access_and_the_request_is_only_recorded(env: LabEnv) -> None:
    browser = env.browser()
    assert 'href="/signup"' in browser.get("/login").get_data(as_text=True)
    page = ask(browser, "dora", "dora@example.org", "my  thesis\nneeds a GPU")
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "is waiting for a lab admin" in page.get_data(as_text=True)
    entry = stored(env)["dora"]
    assert entry["email"] == "dora@example.org" and entry["status"] == "pending"
    assert entry["reason"] == "my thesis needs a GPU"  # one line
    assert stat.S_IMODE(os.stat(requests_file(env)).st_mode) == 0o600
    # Nothing else: she has no password, the guard does not know her.
    assert env.browser().login("dora", "whatever-pass-1").status_code == 401
    assert "dora" not in json.loads(Path(env.broker_data["passwords"]).read_text())["users"]


@pytest.mark.parametrize(
    ("name", "email", "reason", "message"),
    [
        ("Dora!", "dora@example.org", "x", "lowercase letters"),
        ("dora", "dora-at-example.org", "x", "not a valid address"),
        ("dora", "dora@example", "x", "not a valid address"),
        ("dora", "dora@example.org", "x" * 501, "at most 500 characters"),
        ("alice", "alice2@example.org", "x", "already taken"),  # a lab user
        ("root", "r@example.org", "x", "reserved"),
    ],
)
def test_bad_requests_get_a_clear_message_and_change_nothing(
    env: LabEnv, name: str, email: str, reason: str, message: str
) -> None:
    page = ask(env.browser(), name, email, reason)
    assert page.status_code == 400
    assert message in page.get_data(as_text=True)
    assert stored(env) == {}


def test_a_pending_name_is_taken_and_the_form_needs_its_csrf_token(env: LabEnv) -> None:
    assert ask(env.browser(), "dora", "dora@example.org").status_code == 200
    again = ask(env.browser(), "dora", "other@example.org")
    assert again.status_code == 400 and "already taken" in again.get_data(as_text=True)
    forged = env.browser().post("/signup", {"name": "eve", "email": "eve@example.org"}, csrf_from=None)
    assert forged.status_code == 400 and "eve" not in stored(env)


def test_requests_are_rate_limited_per_address_and_pending_ones_capped(
    env: LabEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = env.browser()
    for i in range(signup.PER_CLIENT):
        assert ask(browser, f"user{i}", f"u{i}@example.org").status_code == 200
    limited = ask(browser, "user9", "u9@example.org")
    assert limited.status_code == 429 and "too many requests from this address" in limited.get_data(as_text=True)
    assert "user9" not in stored(env)
    # Another address may still ask ...
    other = ask(browser, "user8", "u8@example.org", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200
    # ... until the cap on pending requests (the broker reads the constant at each request).
    monkeypatch.setattr(signup, "MAX_PENDING", len(stored(env)))
    full = ask(browser, "user7", "u7@example.org", environ_base={"REMOTE_ADDR": "192.0.2.8"})
    assert full.status_code == 429 and "waiting for an answer" in full.get_data(as_text=True)
    assert "user7" not in stored(env)


def test_global_rate_limit(env: LabEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signup, "GLOBAL", 2)
    for i in range(2):
        addr = {"REMOTE_ADDR": f"192.0.2.{10 + i}"}
        assert ask(env.browser(), f"g{i}", f"g{i}@example.org", environ_base=addr).status_code == 200
    refused = ask(env.browser(), "g3", "g3@example.org", environ_base={"REMOTE_ADDR": "192.0.2.30"})
    assert refused.status_code == 429 and "at the moment" in refused.get_data(as_text=True)


# -- Account: change her own password ------------------------------------------------------------------------------


def change(browser: Browser, current: str, new: str, confirm: str = "") -> Any:
    data = {"current": current, "password": new, "confirm": confirm or new}
    return browser.post("/account", data, csrf_from="/account")


def test_password_change_ends_other_sessions_keeps_this_one(env: LabEnv) -> None:
    here, elsewhere = env.browser(), env.browser()
    here.login("bob")
    elsewhere.login("bob")
    assert 'href="/account"' in here.get("/").get_data(as_text=True)
    done = change(here, PASSWORDS["bob"], "bob-brand-new-pw")
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert "your password is changed" in here.get("/account").get_data(as_text=True)
    assert here.get("/").status_code == 200  # this session goes on
    assert elsewhere.get("/").status_code == 302  # the other one ended
    assert env.browser().login("bob").status_code == 401  # the old password is refused
    assert env.browser().login("bob", "bob-brand-new-pw").status_code == 302


@pytest.mark.parametrize(
    ("current", "new", "confirm", "message"),
    [
        ("not-bob-password", "bob-brand-new-pw", "", "current password is not right"),
        (PASSWORDS["bob"], "short", "", "at least 10 characters"),
        (PASSWORDS["bob"], "bob-brand-new-pw", "bob-brand-new-px", "the new passwords differ"),
        (PASSWORDS["bob"], PASSWORDS["bob"], "", "is the current one"),
    ],
)
def test_bad_password_changes_change_nothing(env: LabEnv, current: str, new: str, confirm: str, message: str) -> None:
    browser = env.browser()
    browser.login("bob")
    page = change(browser, current, new, confirm)
    assert page.status_code == 400 and message in page.get_data(as_text=True)
    assert browser.get("/").status_code == 200
    assert env.browser().login("bob").status_code == 302


def test_account_needs_login_and_csrf(env: LabEnv) -> None:
    assert env.browser().get("/account").status_code == 302
    browser = env.browser()
    browser.login("bob")
    forged = browser.post("/account", {"current": PASSWORDS["bob"], "password": "x" * 12, "confirm": "x" * 12}, None)
    assert forged.status_code == 400
    assert env.browser().login("bob").status_code == 302


def test_signup_can_be_switched_off(env: LabEnv, tmp_path: Path) -> None:
    from metalab.portal.app import create_app
    from metalab.portal.settings import Settings

    settings = Settings(
        broker_socket=env.broker_data["socket"], secret_key_file=str(tmp_path / "portal" / "secret_key"), signup=False
    )
    browser = Browser(create_app(settings).test_client())
    assert 'href="/signup"' not in browser.get("/login").get_data(as_text=True)
    assert browser.get("/signup").status_code == 404
    assert browser.post("/signup", {"name": "dora", "email": "d@example.org"}, csrf_from="/login").status_code == 404
    assert stored(env) == {}
