"""The lab portal end to end (issue 9) on a converged nspawn lab host with lab users alice and bob (gpu: true).

The browser and the HTTP client run on the controller and come in through the front door, like a lab user's
machine; the broker's API is called on the host as the portal's own account. Passwords are set with
`metalab-broker passwd NAME --stdin` (what `labctl users passwd` runs). Tests that change guard.json restore it.
Screenshots are kept in the artifacts directory (see conftest.py).
"""

import base64
import json
import re
import statistics
import time

import pytest
from conftest import PortalClient, ok, root, run_in_new_notebook, wait_for, write_root_file

GUARD = "/etc/metalab/guard.json"
SOCKET = "/run/metalab/broker.sock"
FAKE_CDI = "/etc/cdi/metalab-test-fake-gpu.yaml"


def running(host, user):
    return root(host, "podman container exists metalab-%s", user).rc == 0


def seconds(text):
    """'11h59m', '11h59m07s', '4m05s' -> seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    assert match and text.strip(), f"not a duration: {text!r}"
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


@pytest.fixture
def guard_config(host):
    """guard.json as a dict; whatever a test writes back is undone afterwards."""
    original = ok(host, "cat %s", GUARD)
    yield json.loads(original)
    write_root_file(host, GUARD, original)


def write_guard(host, config):
    write_root_file(host, GUARD, json.dumps(config, indent=2))


@pytest.fixture
def client(base_url):
    return lambda: PortalClient(base_url)


# --- deployment -------------------------------------------------------------------------------------------------


def test_services_run_with_separated_privileges(host):
    for unit in ("metalab-broker", "metalab-portal"):
        assert host.service(unit).is_running
        assert host.service(unit).is_enabled
    sock = host.file(SOCKET)
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("root", "metalab-portal", 0o660)
    # The portal's processes run as its own account, which has no group beyond its own.
    users = set(ok(host, "ps -o user= -C gunicorn").split())
    assert users == {"metalab-portal"}
    assert ok(host, "id -Gn metalab-portal").split() == ["metalab-portal"]
    assert host.user("metalab-portal").shell in ("/usr/sbin/nologin", "/sbin/nologin")
    for path in ("/etc/metalab/passwords.json", "/etc/metalab/broker.key"):
        f = host.file(path)
        assert (f.user, f.mode) == ("root", 0o600), path
    assert ok(host, "curl -s http://127.0.0.1:8081/healthz").strip() == "ok"
    # The portal's systemd sandbox: no privilege escalation, read-only system.
    props = ok(host, "systemctl show metalab-portal -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome")
    assert "User=metalab-portal" in props and "NoNewPrivileges=yes" in props
    assert "ProtectSystem=strict" in props and "ProtectHome=yes" in props


# --- the browser: log in, start, open JupyterLab, run a cell, countdown, stop ------------------------------------


def test_browser_login_start_open_run_countdown_stop(host, base_url, passwords, stopped, page, artifacts):
    timings = {}
    t0 = time.monotonic()
    page.goto(base_url + "/")
    page.wait_for_selector("#login-button")
    page.fill("#username", "alice")
    page.fill("#password", passwords["alice"])
    page.click("#login-button")
    page.wait_for_selector("#start-button")
    timings["login"] = time.monotonic() - t0
    page.screenshot(path=str(artifacts / "portal-1-my-lab.png"), full_page=True)

    t0 = time.monotonic()
    page.check("input[name=kind][value=cpu]")
    page.click("#start-button")
    page.wait_for_selector("#open-lab", timeout=120_000)
    timings["start"] = time.monotonic() - t0
    assert running(host, "alice")
    assert page.inner_text("#runtime-state").strip() == "running"
    page.screenshot(path=str(artifacts / "portal-2-running.png"), full_page=True)

    # Open JupyterLab (a new tab) and run a cell in a new notebook.
    t0 = time.monotonic()
    with page.context.expect_page() as opened:
        page.click("#open-lab")
    lab = opened.value
    lab.wait_for_selector("#jp-main-dock-panel", timeout=120_000)  # JupyterLab, not an error page
    lab.goto(base_url + "/user/alice/lab?reset")  # a fresh workspace with the launcher
    lab.wait_for_selector(".jp-Launcher", timeout=120_000)
    timings["open JupyterLab"] = time.monotonic() - t0
    run_in_new_notebook(lab, "6*7", "42")
    lab.screenshot(path=str(artifacts / "portal-3-jupyterlab.png"))
    lab.close()

    # Back in the portal: the time left counts down.
    page.reload()
    clock = page.locator("#time-left")
    wait_for(lambda: clock.inner_text().strip().endswith("s"), 30, "the live countdown (to the second)")
    first = seconds(clock.inner_text())
    time.sleep(3)
    second = seconds(page.inner_text("#time-left"))
    assert 0 < second < first <= 12 * 3600, (first, second)
    page.screenshot(path=str(artifacts / "portal-4-countdown.png"), full_page=True)

    t0 = time.monotonic()
    page.click("#stop-button")
    page.wait_for_selector("#start-button", timeout=120_000)
    timings["stop"] = time.monotonic() - t0
    assert page.inner_text("#runtime-state").strip() == "stopped"
    assert not running(host, "alice")
    page.screenshot(path=str(artifacts / "portal-5-stopped.png"), full_page=True)
    print("portal timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


# --- sessions and other users ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/user/alice/", "/user/alice/lab", "/user/alice/api/status", "/user/bob/tree/notes.ipynb", "/"]
)
def test_without_a_session_every_lab_path_goes_to_login(client, path):
    answer = client().get(path)
    assert answer.status == 302, answer
    assert answer.location.endswith("/login?next=" + path), answer


def test_a_token_header_still_opens_the_api_without_a_session(host, client, stopped):
    ok(host, "metalab-guard start alice")
    token = ok(host, "metalab-guard token alice").strip()
    c = client()
    answer = wait_for(
        lambda: (a := c.get("/user/alice/api/status", headers={"Authorization": f"token {token}"})).status == 200 and a,
        30,
        "alice's API with her token",
    )
    assert json.loads(answer.body)["kernels"] >= 0
    # A wrong token is refused, even with the JupyterLab cookie that the right one earned (the front door drops
    # cookies of requests that bring their own Authorization header).
    assert c.get("/user/alice/api/status", headers={"Authorization": "token wrong"}).status == 403
    assert client().get("/user/alice/api/status", headers={"Authorization": "token wrong"}).status == 403


def test_a_users_session_cannot_open_or_control_another_users_runtime(host, client, passwords, stopped):
    alice, bob = client(), client()
    alice.login("alice", passwords["alice"])
    bob.login("bob", passwords["bob"])
    assert bob.post("/start", {"kind": "cpu"}, csrf_from="/").status == 302
    assert running(host, "bob")
    wait_for(lambda: bob.get("/user/bob/api/status").status == 200, 30, "bob's JupyterLab through his session")

    # alice's cookie: bob's JupyterLab is 403, and so are starting or stopping his runtime.
    for path in ("/user/bob/lab", "/user/bob/api/status", "/user/bob/api/contents"):
        assert alice.get(path).status == 403, path
    assert alice.post("/stop", {"user": "bob"}, csrf_from="/").status == 403
    assert alice.post("/start", {"user": "bob", "kind": "cpu"}, csrf_from="/").status == 403
    # Dot segments or encoded slashes do not lead from alice's path to bob's either.
    for path in ("/user/alice/../bob/api/status", "/user/alice/%2e%2e/bob/api/status", "/user/alice%2f..%2fbob/"):
        assert alice.get(path).status in (400, 403, 404), path
    assert running(host, "bob")
    assert not running(host, "alice")

    assert bob.post("/stop", {}, csrf_from="/").status == 302
    assert not running(host, "bob")


def test_logout_ends_the_session_and_its_lab_access(client, passwords):
    c = client()
    c.login("alice", passwords["alice"])
    assert c.status()["user"] == "alice"
    assert c.post("/logout", {}, csrf_from="/").status == 302
    answer = c.get("/user/alice/lab")
    assert answer.status == 302 and "/login" in answer.location


def test_forms_without_a_valid_csrf_token_are_refused(host, client, passwords, stopped):
    c = client()
    c.get("/login")  # a session cookie, but no token in the form
    answer = c.post("/login", {"username": "alice", "password": passwords["alice"]})
    assert answer.status == 400, answer
    c.login("alice", passwords["alice"])
    assert c.post("/start", {"kind": "cpu"}).status == 400
    assert c.post("/start", {"kind": "cpu", "csrf_token": "forged"}).status == 400
    assert not running(host, "alice")
    assert c.post("/stop", {"csrf_token": "x"}).status == 400
    assert c.post("/logout", {}).status == 400
    assert c.status()["user"] == "alice"  # still logged in


# --- passwords -----------------------------------------------------------------------------------------------------


def test_wrong_passwords_lock_the_account_with_a_message(host, client, passwords):
    c = client()
    try:
        for _ in range(4):
            assert "wrong user name or password" in c.login("bob", "not-bobs-password", expect=401).body
        answer = c.login("bob", "not-bobs-password", expect=429)  # the fifth failure locks
        assert re.search(r"locked until \d\d:\d\d UTC", answer.body), answer
        answer = c.login("bob", passwords["bob"], expect=429)  # and the right password does not get in meanwhile
        assert re.search(r"locked until \d\d:\d\d UTC", answer.body), answer
        print("lockout message:", re.search(r'id="login-error"[^>]*>([^<]+)', answer.body).group(1))
    finally:
        ok(host, "metalab-broker unlock bob")
    client().login("bob", passwords["bob"])


def test_unknown_user_and_wrong_password_take_the_same_time(host, client, passwords):
    def timed(user):
        c = client()
        while True:
            token = c.csrf("/login")
            started = time.monotonic()
            data = {"username": user, "password": "definitely-wrong-1", "csrf_token": token}
            answer = c.post("/login", data, retry_429=False)
            elapsed = time.monotonic() - started
            if answer.status != 429:  # nginx's rate limit (the tests share an address): not part of the timing
                break
            time.sleep(6)
        assert answer.status == 401, answer
        return elapsed, answer.body

    try:
        known = [timed("bob") for _ in range(3)]
        unknown = [timed(f"nosuchuser{i}") for i in range(3)]
    finally:
        ok(host, "metalab-broker unlock bob")
    k, u = statistics.median(t for t, _ in known), statistics.median(t for t, _ in unknown)
    print(f"login refusal: wrong password {k:.2f}s, unknown user {u:.2f}s (medians of 3)")
    assert abs(k - u) < 0.5 * max(k, u) + 0.1, (known, unknown)
    # And the same words for both.
    message = re.compile(r'id="login-error"[^>]*>([^<]+)')
    assert {message.search(b).group(1) for _, b in known} == {message.search(b).group(1) for _, b in unknown}


def test_login_posts_are_rate_limited_per_address(host):
    """From the host's own address (not the controller's, which the other tests use): beyond the burst, 429."""
    address = ok(host, "hostname -I").split()[0]
    codes = ok(
        host,
        "for i in $(seq 1 25); do curl -sk -o /dev/null -w '%%{http_code}\\n' -X POST -d x=1 https://%s/login; done",
        address,
    ).split()
    assert "429" in codes, codes
    assert codes[0] != "429"


# --- the broker as the portal account ---------------------------------------------------------------------------

BROKER_PROBE = r"""
import json, socket, sys
password = sys.stdin.readline().strip()
def call(**req):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect("/run/metalab/broker.sock")
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
out = {}
login = call(op="login", user="alice", password=password)
ticket = login["result"]["ticket"]
out["start_bob"] = call(op="start", ticket=ticket, user="bob", kind="cpu")
out["stop_bob"] = call(op="stop", ticket=ticket, user="bob")
out["token_bob"] = call(op="token", ticket=ticket, user="bob")
forged = ticket[:-4] + ("AAAA" if not ticket.endswith("AAAA") else "BBBB")
out["forged"] = call(op="start", ticket=forged, kind="cpu")
out["no_ticket"] = call(op="start", user="bob", kind="cpu")
out["whoami"] = call(op="whoami", ticket=ticket)
call(op="logout", ticket=ticket)
out["after_logout"] = call(op="whoami", ticket=ticket)
print(json.dumps(out))
"""


def test_the_portal_account_cannot_act_for_another_user_through_the_broker(host, passwords, stopped):
    ok(host, "metalab-guard start bob")
    script = base64.b64encode(BROKER_PROBE.encode()).decode()
    secret = base64.b64encode((passwords["alice"] + "\n").encode()).decode()
    out = json.loads(
        ok(
            host,
            "echo %s | base64 -d > /tmp/metalab-broker-probe.py && chmod 0644 /tmp/metalab-broker-probe.py && "
            "echo %s | base64 -d | sudo -u metalab-portal python3 /tmp/metalab-broker-probe.py",
            script,
            secret,
        )
    )
    root(host, "rm -f /tmp/metalab-broker-probe.py")
    for key in ("start_bob", "stop_bob", "token_bob"):
        assert out[key]["ok"] is False and out[key]["error"]["code"] == "forbidden", (key, out[key])
    for key in ("forged", "no_ticket", "after_logout"):
        assert out[key]["ok"] is False and out[key]["error"]["code"] in ("unauthorized", "bad-request"), (key, out)
    assert out["whoami"]["result"]["user"] == "alice"
    assert running(host, "bob")  # untouched
    assert not running(host, "alice")
    # Anyone else (a lab user's account) cannot even connect to the socket.
    probe = root(
        host,
        "sudo -u lab-alice python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('%s')\"",
        SOCKET,
    )
    assert probe.rc != 0 and "Permission denied" in probe.stderr


# --- refusals of the guard: budget exhausted, no free GPU ---------------------------------------------------------


def test_budget_exhausted_shows_its_message_and_nothing_starts(host, client, passwords, stopped, guard_config):
    bob = client()
    bob.login("bob", passwords["bob"])
    # Some CPU use in the last 24 h, then a 5-minute budget (a start needs 5 minutes left): exhausted.
    assert bob.post("/start", {"kind": "cpu"}, csrf_from="/").status == 302
    time.sleep(2)
    assert bob.post("/stop", {}, csrf_from="/").status == 302
    guard_config["users"]["bob"]["budgets"] = {"cpu": "5m"}
    write_guard(host, guard_config)
    page = bob.get("/")
    assert "budget exhausted until" in page.body
    answer = bob.post("/start", {"kind": "cpu"}, csrf_from="/")
    assert answer.status == 409, answer
    assert "Budget exhausted" in answer.body and "budget exhausted until" in answer.body
    assert not running(host, "bob")


def test_no_free_gpu_shows_its_message_and_nothing_starts(host, client, passwords, stopped, guard_config):
    """One (fake, CDI-described) GPU on the host, taken by bob's GPU runtime: alice's GPU start is refused."""
    spec = 'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices:\n  - name: "0"\n    containerEdits:\n'
    spec += '      env: ["METALAB_FAKE_GPU=0"]\n'
    ok(host, "mkdir -p /etc/cdi")
    write_root_file(host, FAKE_CDI, spec, mode="0644")
    try:
        guard_config["runtime"]["gpus"] = [0]
        guard_config["users"]["alice"]["gpu"] = True
        write_guard(host, guard_config)
        ok(host, "metalab-guard start bob --gpu")
        alice = client()
        alice.login("alice", passwords["alice"])
        status = alice.status()
        assert (status["gpus_total"], status["gpus_free"]) == (1, 0)
        answer = alice.post("/start", {"kind": "gpu"}, csrf_from="/")
        assert answer.status == 409, answer
        assert "No GPU runtime available right now" in answer.body
        assert "no GPU runtime available right now (1 of 1 in use)" in answer.body
        assert not running(host, "alice")
    finally:
        root(host, "metalab-guard stop bob")
        root(host, "rm -f %s", FAKE_CDI)


# --- restarts -------------------------------------------------------------------------------------------------------


def test_sessions_and_runtimes_survive_portal_and_broker_restarts(host, client, passwords, stopped):
    c = client()
    c.login("alice", passwords["alice"])
    assert c.post("/start", {"kind": "cpu"}, csrf_from="/").status == 302
    ok(host, "systemctl restart metalab-broker metalab-portal")
    wait_for(lambda: c.get("/").status == 200, 60, "the portal answering after its restart")
    assert running(host, "alice")  # the runtime is not the broker's child to take down
    status = wait_for(
        lambda: (st := c.status())["runtime"] and st["runtime"]["state"] == "running" and st, 60, "alice running"
    )
    assert status["user"] == "alice"
    wait_for(lambda: c.get("/user/alice/api/status").status == 200, 30, "alice's JupyterLab after the restarts")
