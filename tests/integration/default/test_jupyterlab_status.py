"""Issue 19, end to end in the real browser: inside her JupyterLab, alice sees her home usage and quota, the time
left to her runtime and her budget (the metalab status bar item), and the guard's warning before a stop as a
JupyterLab notification. Paired: the status route is hers alone (bob's is refused to her session; without her token
her own socket answers nothing).

The guard writes /run/metalab/sockets/<user>/metalab-status.json (the runtime's /run/lab) at start and on each run;
the runtime's server extension serves it at /user/<user>/metalab/status; the extension polls it every 30 s.
"""

import json
import re

import pytest
from conftest import ok, root, wait_for, wait_lab_ready

LAB = "/user/alice/lab"
STATUS = "#metalab-status"
SOCKETS = "/run/metalab/sockets"
SHORT_CONFIG = "/root/metalab-guard-short-limit.json"


def guard_runtime(host, user):
    return next(r for r in json.loads(ok(host, "metalab-guard list --json")) if r["user"] == user)


@pytest.fixture
def both_running(host, stopped):
    """alice's and bob's runtimes are up (stopped again after the test by `stopped`)."""
    for user in ("alice", "bob"):
        ok(host, "metalab-guard start %s", user)
    for user in ("alice", "bob"):
        wait_lab_ready(host, user)
    yield
    root(host, "rm -f %s", SHORT_CONFIG)


def test_jupyterlab_shows_her_quota_time_left_and_the_guards_warning(
    host, base_url, passwords, page, artifacts, both_running
):
    # The usage file (contract 1) and a guard run like cron's: her status file holds her quota and time.
    ok(host, "metalab-guard home-usage --write")
    ok(host, "metalab-guard run")
    status = json.loads(ok(host, "cat %s/alice/metalab-status.json", SOCKETS))
    assert status["user"] == "alice" and status["home"]["limit_bytes"] == 1024**3

    page.goto(base_url + "/login?next=" + LAB + "?reset")
    page.fill("#username", "alice")
    page.fill("#password", passwords["alice"])
    page.click("#login-button")
    item = page.locator(STATUS)
    wait_for(lambda: "left" in item.inner_text(), 120, "the metalab status bar item", interval=1)
    text = item.inner_text()
    assert re.search(r"^Home \d+(\.\d)? (B|KiB|MiB|GiB) / 1\.0 GiB · ", text), text
    shown_left = int(item.get_attribute("data-time-left"))
    guard_left = guard_runtime(host, "alice")["time_left_seconds"]
    assert abs(shown_left - guard_left) <= 30, (text, shown_left, guard_left)
    assert "budget" not in text or status["budget_left_seconds"] is not None

    # Her own route through her session answers her status; bob's, through the same session, is refused.
    mine = page.request.get(base_url + "/user/alice/metalab/status")
    assert mine.status == 200 and mine.json()["user"] == "alice"
    assert ok(host, "test -s %s/bob/metalab-status.json && echo yes", SOCKETS).strip() == "yes"
    theirs = page.request.get(base_url + "/user/bob/metalab/status", max_redirects=0)
    assert theirs.status == 403 and "bob" not in theirs.text()
    # On the host, her socket without her token refuses the route; with it, it answers (what the front door does).
    probe = f"curl -s -o /dev/null -w '%{{http_code}}' --unix-socket {SOCKETS}/alice/jupyter.sock "
    url = "http://x/user/alice/metalab/status"
    assert ok(host, probe + url) == "403"
    her_token = ok(host, "metalab-guard token alice").strip()
    assert ok(host, probe + f"-H 'Authorization: token {her_token}' " + url) == "200"

    # A guard run under a copy of the config where alice's CPU runtimes end 10 minutes after hers started: the real
    # guard warns her (15-minute warning), and her JupyterLab shows that warning as a notification, once.
    started = guard_runtime(host, "alice")["started"]
    root(host, "metalab-guard run")  # nothing to warn under the real limits
    make_copy = (
        "import json; c = json.load(open('/etc/metalab/guard.json')); "
        "c['users']['alice'].setdefault('limits', {})['cpu'] = '10m'; "
        f"json.dump(c, open('{SHORT_CONFIG}', 'w'))"
    )
    ok(host, "install -m 0600 /dev/null %s && python3 -c %s", SHORT_CONFIG, make_copy)
    report = json.loads(ok(host, "metalab-guard --config %s run --json", SHORT_CONFIG))
    assert report["warned"] == ["alice"], (report, started)
    warning = json.loads(ok(host, "cat %s/alice/metalab-status.json", SOCKETS))["warning"]
    assert "stops in" in warning["message"]
    toast = page.locator(".Toastify__toast", has_text=warning["message"])
    toast.wait_for(timeout=45_000)  # the next poll (every 30 s)
    assert toast.count() == 1
    page.screenshot(path=str(artifacts / "jupyterlab-status-warning.png"))
    # the next poll finds the same warning: still one notification
    page.wait_for_timeout(31_000)
    assert page.locator(".Toastify__toast", has_text=warning["message"]).count() == 1
