"""The portal web app through Flask's test client, against a real broker on a unix socket (simulated podman)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Tuple

import pytest

from metalab.host.guard import idle
from metalab.portal.text import human_bytes, lab_user_of, safe_next

from .conftest import PASSWORDS, Browser, LabEnv

# -- log in / log out ---------------------------------------------------------------------------------------------


def test_login_sets_a_hardened_session_cookie(env: LabEnv) -> None:
    browser = env.browser()
    assert browser.get("/").headers["Location"].startswith("/login?next=/")
    response = browser.login("alice")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-metalab=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    page = browser.get("/")
    assert page.status_code == 200 and "My lab" in page.get_data(as_text=True)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_wrong_password_and_unknown_user_look_the_same(env: LabEnv) -> None:
    wrong = env.browser().login("alice", "not-her-password")
    unknown = env.browser().login("mallory", "not-her-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong user name or password" in wrong.get_data(as_text=True)
    assert "wrong user name or password" in unknown.get_data(as_text=True)


def test_lockout_message(env: LabEnv) -> None:
    browser = env.browser()
    for _ in range(4):
        assert browser.login("bob", "wrong-password").status_code == 401
    locked = browser.login("bob", "wrong-password")
    assert locked.status_code == 429 and "locked until" in locked.get_data(as_text=True)
    assert browser.login("bob").status_code == 429  # the right password waits as well


def test_login_redirects_only_to_local_paths(env: LabEnv) -> None:
    browser = env.browser()
    response = browser.post(
        "/login", {"username": "alice", "password": PASSWORDS["alice"], "next": "/user/alice/lab"}, csrf_from="/login"
    )
    assert response.headers["Location"] == "/user/alice/lab"
    assert safe_next("//evil.example/x") == safe_next("https://evil.example") == safe_next("/\\evil") == "/"
    assert safe_next("/admin?x=1") == "/admin?x=1"


def test_logout_ends_the_session_for_every_copy_of_the_cookie(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    stolen = browser.client.get_cookie("__Host-metalab", domain="lab.test").value
    assert browser.post("/logout").headers["Location"] == "/login"
    assert browser.get("/").status_code == 302
    replay = env.browser()
    replay.client.set_cookie("__Host-metalab", stolen, domain="lab.test")
    assert replay.get("/").headers["Location"].startswith("/login")  # the broker revoked the ticket
    assert replay.get("/auth/check", headers={"X-Original-URI": "/user/alice/lab"}).status_code == 401


def test_sessions_survive_a_portal_restart(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    cookie = browser.client.get_cookie("__Host-metalab", domain="lab.test").value
    env.stop_broker()
    env.start_broker()
    restarted = env.browser()  # a new app instance reads the same secret key file
    restarted.client.set_cookie("__Host-metalab", cookie, domain="lab.test")
    assert restarted.get("/").status_code == 200


# -- CSRF ---------------------------------------------------------------------------------------------------------


def test_forms_without_a_csrf_token_are_refused(env: LabEnv) -> None:
    browser = env.browser()
    no_token = browser.post("/login", {"username": "alice", "password": PASSWORDS["alice"]}, csrf_from=None)
    assert no_token.status_code == 400 and "CSRF" in no_token.get_data(as_text=True)
    browser.login("alice")
    for path, data in (("/start", {"kind": "cpu"}), ("/stop", {}), ("/logout", {})):
        assert browser.post(path, data, csrf_from=None).status_code == 400, path
        assert browser.post(path, dict(data, csrf_token="forged"), csrf_from=None).status_code == 400, path
    assert env.sim.containers() == {}
    # another session's token does not fit this session
    other = env.browser()
    other.login("bob")
    foreign = other.csrf("/")
    assert browser.post("/start", {"kind": "cpu", "csrf_token": foreign}, csrf_from=None).status_code == 400
    assert env.sim.containers() == {}


# -- my lab -------------------------------------------------------------------------------------------------------


def test_start_and_stop_my_runtime(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    page = browser.get("/").get_data(as_text=True)
    assert 'id="runtime-state">stopped' in page and "Start runtime" in page and "quota: n/a" in page
    assert browser.post("/start", {"kind": "cpu"}).headers["Location"] == "/"
    assert set(env.sim.containers()) == {"metalab-alice"}
    page = browser.get("/").get_data(as_text=True)
    assert 'id="runtime-state">running' in page
    assert 'href="/user/alice/lab"' in page and "Open JupyterLab" in page
    assert 'id="time-left" data-seconds="43' in page  # 12h = 43200 s, counting down
    status = browser.get("/api/status").get_json()
    assert status["runtime"]["kind"] == "cpu" and status["runtime"]["time_left_seconds"] > 43000
    assert browser.post("/stop").headers["Location"] == "/"
    assert env.sim.containers() == {}
    assert 'id="runtime-state">stopped' in browser.get("/").get_data(as_text=True)


def alice_page_with_usage(env: LabEnv, usage: str) -> Tuple[Browser, str]:
    """alice's lab page, the broker restarted with a usage (quota) file holding USAGE."""
    quota = env.tmp / "quota.json"
    quota.write_text(usage)
    env.stop_broker()
    env.broker_data["quota_file"] = str(quota)
    env.start_broker()
    browser = env.browser()
    browser.login("alice")
    return browser, browser.get("/").get_data(as_text=True)


def test_gpu_runtime_and_quota(env: LabEnv) -> None:
    browser, page = alice_page_with_usage(env, '{"alice": {"used_bytes": 3221225472, "limit_bytes": 16106127360}}')
    assert "3.0 GiB used of 15.0 GiB" in page and "2 of 2 GPUs free" in page
    browser.post("/start", {"kind": "gpu"})
    assert env.sim.containers()["metalab-alice"]["labels"]["metalab.gpu"] == "0"
    bob = env.browser()
    bob.login("bob")
    assert 'value="gpu"' not in bob.get("/").get_data(as_text=True)  # bob may not use GPUs


def test_home_without_a_quota_says_so(env: LabEnv) -> None:
    _, page = alice_page_with_usage(env, '{"alice": {"used_bytes": 3221225472, "limit_bytes": 0}}')
    assert "3.0 GiB used (no quota)" in page and "used of 0" not in page


def test_the_idle_stop_is_shown_with_the_runtime(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    browser.post("/start", {"kind": "cpu"})
    page = browser.get("/").get_data(as_text=True)
    # Not asked yet by a guard run: in use, with the timeout of her kind (3 h for CPU by default).
    assert 'id="idle-stop">in use' in page and "stops after 3h" in page
    # A guard run found it idle since 10:00 UTC on 2030-01-01: it stops at 13:00 unless she uses it.
    session = browser.get("/api/status").get_json()["runtime"]["session"]
    idle.write_state(idle.state_path(env.guard["ledger"]), {str(session): {"since": 1893492000.0}})
    page = browser.get("/").get_data(as_text=True)
    assert 'id="idle-stop">at 2030-01-01T13:00:00Z if it stays unused' in page


def test_cannot_act_for_another_user_through_the_portal(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    assert browser.post("/start", {"kind": "cpu", "user": "bob"}).status_code == 403
    assert browser.post("/stop", {"user": "bob"}).status_code == 403
    assert env.sim.containers() == {}
    env.client().call("start", ticket=env.ticket("bob"))
    assert browser.post("/stop", {"user": "bob"}).status_code == 403
    assert browser.post("/admin/stop", {"target": "bob"}).status_code == 403  # alice is no admin
    assert browser.get("/admin").status_code == 403
    assert set(env.sim.containers()) == {"metalab-bob"}


def test_budget_exhausted_page_and_nothing_starts(env: LabEnv) -> None:
    env.guard["policy"]["budgets"] = {"cpu": "1h"}
    env.write_guard()
    lab = env.lab()
    now = time.time()
    lab.start("alice", "cpu", now=now - 3500)
    lab.stop("alice", "user", now=now - 10)
    lab.close()
    calls = len(env.sim.calls("run"))
    browser = env.browser()
    browser.login("alice")
    assert "cpu budget exhausted until" in browser.get("/").get_data(as_text=True)
    response = browser.post("/start", {"kind": "cpu"})
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert 'id="refused-heading">Budget exhausted' in page
    assert "cpu budget exhausted until " in page and " UTC" in page and "Nothing was started" in page
    assert env.sim.containers() == {} and len(env.sim.calls("run")) == calls


def test_no_free_gpu_page_and_nothing_starts(env: LabEnv) -> None:
    env.guard["runtime"]["gpus"] = [0]
    env.write_guard()
    env.client().call("start", ticket=env.ticket("carol"), kind="gpu")
    browser = env.browser()
    browser.login("alice")
    assert "0 of 1 GPUs free" in browser.get("/").get_data(as_text=True)
    response = browser.post("/start", {"kind": "gpu"})
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert 'id="refused-heading">No GPU runtime available right now' in page
    assert "no GPU runtime available right now (1 of 1 in use)" in page
    assert set(env.sim.containers()) == {"metalab-carol"}


def test_broker_down_gives_a_clear_page(env: LabEnv) -> None:
    browser = env.browser()
    browser.login("alice")
    env.stop_broker()
    response = browser.get("/")
    assert response.status_code == 503 and "not reachable" in response.get_data(as_text=True)


# -- the front door's auth_request --------------------------------------------------------------------------------


def check(browser: Browser, uri: str):  # type: ignore[no-untyped-def]
    return browser.get("/auth/check", headers={"X-Original-URI": uri})


def test_auth_check(env: LabEnv) -> None:
    anonymous = env.browser()
    assert check(anonymous, "/user/alice/lab").status_code == 401
    browser = env.browser()
    browser.login("alice")
    before = check(browser, "/user/alice/lab")
    assert before.status_code == 200 and "X-Lab-Token" not in before.headers  # no runtime started yet
    browser.post("/start", {"kind": "cpu"})
    token = Path(env.guard["runtime"]["token_dir"], "alice").read_text().strip()
    for uri in ("/user/alice/lab", "/user/alice/", "/user/alice", "/user/alice/api/kernels?x=1", "/user/alice/lab%20x"):
        ok = check(browser, uri)
        assert ok.status_code == 200, uri
        assert ok.headers["X-Lab-Token"] == token and ok.headers["X-Lab-User"] == "alice"
        assert ok.headers["Cache-Control"] == "no-store"
    for uri in (
        "/user/bob/lab",
        "/user/alicex/lab",
        "/user/alice/../bob/lab",
        "/user/alice/%2e%2e/bob/lab",
        "/user/alice/..%2fbob/lab",
        "/user/alice%2f..%2fbob/lab",
        "//user/alice/lab",
        "/admin",
        "",
    ):
        denied = check(browser, uri)
        assert denied.status_code == 403, uri
        assert "X-Lab-Token" not in denied.headers
    assert browser.get("/auth/check").status_code == 403  # no X-Original-URI at all


def test_lab_user_of() -> None:
    assert lab_user_of("/user/alice/lab/tree?x=/user/bob/") == "alice"
    assert lab_user_of("/user/Alice/lab") is None
    assert lab_user_of("/users/alice/lab") is None
    assert human_bytes(None) == "n/a" and human_bytes(1536) == "1.5 KiB"


# -- admin --------------------------------------------------------------------------------------------------------


def test_admin_view_stop_and_extend(env: LabEnv) -> None:
    env.client().call("start", ticket=env.ticket("alice"))
    env.client().call("start", ticket=env.ticket("bob"))
    admin = env.browser()
    admin.login("carol")
    page = admin.get("/admin").get_data(as_text=True)
    assert 'data-user="alice"' in page and 'data-user="bob"' in page and "2 running" in page
    assert admin.post("/admin/extend", {"target": "alice", "duration": "2h"}, csrf_from="/admin").status_code == 302
    assert "extended the runtime of alice" in admin.get("/admin").get_data(as_text=True)
    bad = admin.post("/admin/extend", {"target": "alice", "duration": "soon"}, csrf_from="/admin")
    assert bad.status_code == 302 and "invalid duration" in admin.get("/admin").get_data(as_text=True)
    assert admin.post("/admin/stop", {"target": "bob"}, csrf_from="/admin").status_code == 302
    assert set(env.sim.containers()) == {"metalab-alice"}
    assert "stopped the runtime of bob" in admin.get("/admin").get_data(as_text=True)
    assert admin.post("/admin/stop", {"target": "bob"}, csrf_from=None).status_code == 400  # CSRF here too
    # the admin's own cookie still never opens someone else's lab
    assert check(admin, "/user/alice/lab").status_code == 403


# -- enrollment ---------------------------------------------------------------------------------------------------


def test_enrollment_through_the_portal(env: LabEnv) -> None:
    from metalab.host.broker.auth import AuthStore

    link = AuthStore(env.broker_config).create_enrollment("bob")["token"]
    browser = env.browser()
    page = browser.get(f"/enroll/{link}")
    assert page.status_code == 200 and "Set a password for bob" in page.get_data(as_text=True)
    mismatch = browser.post(
        f"/enroll/{link}", {"password": "bobs-new-password", "confirm": "other"}, csrf_from=f"/enroll/{link}"
    )
    assert "the passwords differ" in mismatch.get_data(as_text=True)
    done = browser.post(
        f"/enroll/{link}",
        {"password": "bobs-new-password", "confirm": "bobs-new-password"},
        csrf_from=f"/enroll/{link}",
    )
    assert done.headers["Location"] == "/"
    assert "your password is set" in browser.get("/").get_data(as_text=True)
    assert env.browser().get(f"/enroll/{link}").status_code == 404  # single use
    assert env.browser().login("bob", "bobs-new-password").status_code == 302


@pytest.mark.parametrize("path", ["/", "/admin", "/api/status"])
def test_pages_need_a_session(env: LabEnv, path: str) -> None:
    assert env.browser().get(path).headers["Location"].startswith("/login?next=")


def test_a_runtime_whose_jupyterlab_does_not_listen_yet_is_shown_starting(env: LabEnv) -> None:
    """The container runs but nothing accepts on jupyter.sock: "Open JupyterLab" would only reach an error page."""
    env.sim.jupyter_sockets = None  # the runtime starts, its JupyterLab never listens
    browser = env.browser()
    browser.login("alice")
    assert browser.post("/start", {"kind": "cpu"}).status_code == 302
    assert set(env.sim.containers()) == {"metalab-alice"}
    page = browser.get("/").get_data(as_text=True)
    assert 'id="runtime-state">starting' in page and "Open JupyterLab" not in page
