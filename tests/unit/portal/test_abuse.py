"""One user cannot take the portal down for all (issue 15): slow starts and stops do not hold up the auth checks,
login throttling cannot lock an account out from everywhere, user names are matched in full. Every attack is paired
with the legitimate action through the same client."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from metalab.brokerapi.client import BrokerError
from metalab.host.broker import cli
from metalab.host.broker.auth import AuthError, AuthStore, client_key
from metalab.host.broker.config import BrokerConfigError, parse_config
from metalab.host.guard.lock import GuardLock
from metalab.portal.app import create_app
from metalab.portal.forms import USER_PATTERN
from metalab.portal.settings import Settings, SettingsError, parse_settings
from metalab.portal.text import lab_user_of

from .conftest import BASE, CSRF, PASSWORDS, LabEnv


@contextmanager
def guard_lock_held(env: LabEnv) -> Iterator[None]:
    """Hold the guard's lock as another guard run (or a slow ``podman run``) would: starts and stops wait for it
    (up to the guard's lock_timeout, made long enough here for a loaded test machine)."""
    env.guard["lock_timeout"] = 60
    env.write_guard()
    lock = GuardLock(env.guard["lock"])
    assert lock.acquire(5)
    try:
        yield
    finally:
        lock.release()


def in_thread(fn: Any) -> Dict[str, Any]:
    """Run FN in a thread; the dict gets "result" or "error" and "thread"."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def timed(fn: Any) -> Any:
    t = time.monotonic()
    result = fn()
    return result, time.monotonic() - t


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


# -- 1. slow starts and stops do not hold up anyone else -------------------------------------------------------------


def test_a_start_waiting_for_the_guard_lock_blocks_no_one_and_a_second_start_is_refused_at_once(env: LabEnv) -> None:
    broker = env.client()
    alice, bob = env.ticket("alice"), env.ticket("bob")
    # The legitimate action alone: bob's token and status answer, alice's start and stop work.
    assert broker.call("token", ticket=bob)["token"] is None
    with guard_lock_held(env):
        slow = in_thread(lambda: broker.call("start", ticket=alice))
        wait_until(lambda: "alice" in env.server.broker._busy)  # type: ignore[union-attr]
        # The attack: more starts and stops of alice's while hers waits. Each is answered at once, nothing changes.
        for op in ("start", "stop", "start"):
            with pytest.raises(BrokerError) as info:
                timed(lambda op=op: broker.call(op, ticket=alice))
            assert info.value.code == "busy" and "already in progress" in str(info.value)
        # Meanwhile everybody else's calls answer (the server serves each connection in its own thread).
        (status, took) = timed(lambda: broker.call("status", ticket=bob))
        assert status["user"] == "bob" and took < 2.0
        (token, took) = timed(lambda: broker.call("token", ticket=bob))
        assert token == {"user": "bob", "token": None} and took < 2.0
        assert slow["thread"].is_alive()  # still waiting for the lock
    slow["thread"].join(timeout=20)
    assert slow.get("result", {}).get("state") == "running", slow
    assert set(env.sim.containers()) == {"metalab-alice"}
    # Once it is done, the next stop is hers to make again.
    assert broker.call("stop", ticket=alice)["reason"] == "user"


def lab_settings(env: LabEnv, **kw: Any) -> Settings:
    return Settings(
        broker_socket=env.broker_data["socket"], secret_key_file=str(env.tmp / "portal" / "secret_key"), **kw
    )


def logged_in(client: Any, user: str) -> str:
    """Log USER in on the Flask test CLIENT; returns a CSRF token of the session."""
    page = client.get("/login", base_url=BASE).get_data(as_text=True)
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    answer = client.post(
        "/login",
        data={"username": user, "password": PASSWORDS[user], "csrf_token": token},
        base_url=BASE,
        headers={"Referer": BASE + "/"},
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return str(CSRF.search(client.get("/", base_url=BASE).get_data(as_text=True)).group(1))  # type: ignore[union-attr]


def test_the_portal_keeps_threads_for_auth_checks_while_starts_wait(env: LabEnv) -> None:
    app = create_app(lab_settings(env, slow_requests=1))
    alice, bob = app.test_client(), app.test_client()
    alice_csrf, bob_csrf = logged_in(alice, "alice"), logged_in(bob, "bob")

    def start(client: Any, csrf: str) -> Any:
        return client.post(
            "/start", data={"kind": "cpu", "csrf_token": csrf}, base_url=BASE, headers={"Referer": BASE + "/"}
        )

    def auth_check(client: Any, user: str) -> Any:
        return client.get("/auth/check", base_url=BASE, headers={"X-Original-URI": f"/user/{user}/lab"})

    assert auth_check(bob, "bob").status_code == 200  # the legitimate request, nothing going on
    with guard_lock_held(env):
        slow = in_thread(lambda: start(alice, alice_csrf))
        wait_until(lambda: "alice" in env.server.broker._busy)  # type: ignore[union-attr]
        # The worker's slow lane is full: another start is answered 503 at once, it does not take a thread.
        (busy, took) = timed(lambda: start(bob, bob_csrf))
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5" and took < 2.0
        assert "The lab is busy" in busy.get_data(as_text=True)
        # bob's JupyterLab traffic is authorised as before.
        (check, took) = timed(lambda: auth_check(bob, "bob"))
        assert check.status_code == 200 and check.headers["X-Lab-User"] == "bob" and took < 2.0
    slow["thread"].join(timeout=20)
    assert slow["result"].status_code == 302
    # A second start or stop of the same runtime while one is in flight: 409 "already in progress" (broker busy).
    app2 = create_app(lab_settings(env, slow_requests=4))
    first, second = app2.test_client(), app2.test_client()
    csrf1, csrf2 = logged_in(first, "alice"), logged_in(second, "alice")
    with guard_lock_held(env):
        slow = in_thread(
            lambda: first.post("/stop", data={"csrf_token": csrf1}, base_url=BASE, headers={"Referer": BASE + "/"})
        )
        wait_until(lambda: "alice" in env.server.broker._busy)  # type: ignore[union-attr]
        (again, took) = timed(lambda: start(second, csrf2))
        assert again.status_code == 409 and took < 2.0
        assert "already in progress" in again.get_data(as_text=True)
    slow["thread"].join(timeout=20)
    assert slow["result"].status_code == 302 and env.sim.containers() == {}


def test_settings_refuse_a_slow_lane_of_zero() -> None:
    with pytest.raises(SettingsError, match="slow_requests"):
        parse_settings({"slow_requests": 0})
    assert parse_settings({"slow_requests": 2}).slow_requests == 2


# -- 2. login throttling: per name and address, and a bounded per-name slow-down -------------------------------------

ATTACKER, OWNER = "203.0.113.66", "198.51.100.7"


def fail(store: AuthStore, user: str, client: str, now: float) -> AuthError:
    with pytest.raises(AuthError) as info:
        store.login(user, "not-the-password", client, now=now)
    return info.value


def test_failures_from_one_address_lock_the_name_from_that_address_only(env: LabEnv) -> None:
    store = AuthStore(env.broker_config)
    t0 = time.time()
    for name in ("carol", "nobody"):  # an admin's account, and a name that does not exist: the same answers
        codes = [fail(store, name, ATTACKER, t0 + i).code for i in range(6)]
        assert codes == ["invalid"] * 4 + ["locked", "locked"], name
        with pytest.raises(AuthError, match="from this address") as locked:
            store.login(name, PASSWORDS.get(name, "x" * 12), ATTACKER, now=t0 + 10)
        assert locked.value.code == "locked"  # locked means locked, for the attacker's address
    # The owner from another address: her password works at once, the lockout does not reach her.
    assert store.login("carol", PASSWORDS["carol"], OWNER, now=t0 + 11).user == "carol"
    # Until the lockout ends, then the attacker's address may try again.
    assert store.login("carol", PASSWORDS["carol"], ATTACKER, now=t0 + 15 * 60 + 6).user == "carol"
    # unlock clears every address's lockout of the name.
    for i in range(5):
        fail(store, "bob", ATTACKER, t0 + i)
    assert store.list_users(now=t0 + 6)["bob"]["locked_addresses"] == 1
    assert store.unlock("bob", now=t0 + 6)
    assert store.login("bob", PASSWORDS["bob"], ATTACKER, now=t0 + 7).user == "bob"


def test_the_per_name_slow_down_is_bounded_and_spares_fresh_addresses(env: LabEnv) -> None:
    env.broker_data["login_slowdown_max"] = "20s"
    store = AuthStore(env.broker_config)
    t0 = time.time()
    # A distributed attack: 10 addresses, one failure each; the name now counts 10 failures.
    for i in range(10):
        assert fail(store, "alice", f"203.0.113.{i}", t0).code == "invalid"
    # An address that failed must wait before it is checked again (2**5 s, capped at 20 s) ...
    slowed = fail(store, "alice", "203.0.113.1", t0 + 1)
    assert slowed.code == "locked" and "try again in" in str(slowed)
    # ... even with the right password (nothing is checked meanwhile), but never longer than the cap.
    with pytest.raises(AuthError, match="try again"):
        store.login("alice", PASSWORDS["alice"], "203.0.113.1", now=t0 + 19)
    assert store.login("alice", PASSWORDS["alice"], "203.0.113.1", now=t0 + 20.5).user == "alice"
    # An address without failures for the name never waits: the owner from a fresh address gets in at once.
    assert store.login("alice", PASSWORDS["alice"], OWNER, now=t0 + 1).user == "alice"
    # An unknown name under the same attack answers the same way.
    for i in range(10):
        assert fail(store, "nobody", f"203.0.113.{i}", t0).code == "invalid"
    assert str(fail(store, "nobody", "203.0.113.1", t0 + 1)).replace("nobody", "alice") == str(slowed)


def test_client_addresses_are_keyed_per_address_and_ipv6_per_64() -> None:
    assert client_key("203.0.113.5") == "203.0.113.5"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert client_key("") == client_key("not an address") == client_key("1.2.3.4\n5") == "-"


def xff_login(client: Any, user: str, password: str, remote: str, forwarded: str) -> Any:
    environ = {"REMOTE_ADDR": remote}
    page = client.get("/login", base_url=BASE, environ_base=environ).get_data(as_text=True)
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    return client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token},
        base_url=BASE,
        environ_base=environ,
        headers={"Referer": BASE + "/", "X-Forwarded-For": forwarded},
    )


def test_the_portal_keys_logins_on_the_address_nginx_passes_and_only_nginx(env: LabEnv) -> None:
    app = create_app(lab_settings(env))
    attacker, owner = app.test_client(), app.test_client()
    statuses = [xff_login(attacker, "alice", "wrong-password", "127.0.0.1", ATTACKER).status_code for _ in range(6)]
    assert statuses == [401] * 4 + [429, 429]
    assert xff_login(attacker, "alice", PASSWORDS["alice"], "127.0.0.1", ATTACKER).status_code == 429
    # alice through nginx from her own address logs in.
    assert xff_login(owner, "alice", PASSWORDS["alice"], "127.0.0.1", OWNER).status_code == 302
    # Someone who reaches the portal's port directly cannot choose the address by sending X-Forwarded-For: the
    # direct peer counts, so a spoofed header neither escapes the lockout nor frames another address.
    spoofer = app.test_client()
    for _ in range(5):
        xff_login(spoofer, "bob", "wrong-password", "192.0.2.9", OWNER)
    assert xff_login(spoofer, "bob", PASSWORDS["bob"], "192.0.2.9", "192.0.2.200").status_code == 429
    assert xff_login(app.test_client(), "bob", PASSWORDS["bob"], "127.0.0.1", OWNER).status_code == 302


# -- 3. user names are matched in full -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "alice\nbob", "\nalice", "alice ", "Alice"])
def test_user_names_with_a_trailing_newline_or_more_are_refused(env: LabEnv, name: str) -> None:
    import re

    assert re.match(USER_PATTERN, name) is None
    assert lab_user_of(f"/user/{name.replace(chr(10), '%0a')}/lab") is None
    with pytest.raises(BrokerError) as info:
        env.client().call("login", user=name, password=PASSWORDS["alice"])
    assert info.value.code == "invalid"
    with pytest.raises(BrokerConfigError, match="admins"):
        parse_config(dict(env.broker_data, admins=[name]))


def test_a_login_name_with_a_newline_is_refused_and_the_plain_name_works(env: LabEnv) -> None:
    for name in ("alice\n", "alice%0a"):
        assert env.browser().login("alice", None).status_code == 302  # the legitimate login, same harness
        answer = env.browser().post("/login", {"username": name, "password": PASSWORDS["alice"]}, csrf_from="/login")
        assert answer.status_code == 401 and "wrong user name or password" in answer.get_data(as_text=True)
    assert lab_user_of("/user/alice/lab") == "alice" and lab_user_of("/user/alice%0a/lab") is None


def test_the_cli_refuses_a_name_with_a_newline(env: LabEnv, tmp_path: Path) -> None:
    import json

    config = tmp_path / "broker.json"
    config.write_text(json.dumps(env.broker_data))
    assert cli.main(["--config", str(config), "enroll", "alice\n"]) == 2
    assert cli.main(["--config", str(config), "enroll", "alice"]) == 0
