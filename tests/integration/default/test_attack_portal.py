"""Attacks on the portal that would take it down for everybody (issue 15), each paired with the legitimate action
through the same harness, on a converged lab host with lab users alice and bob.

- alice loops starts and stops while her start is slow: bob's JupyterLab still answers through the front door.
- failed logins from one address lock alice out from that address only: she logs in from another one.
- "alice\\n" is not alice.

Addresses: nginx passes the portal X-Forwarded-For $remote_addr, so the address a client claims does not count.
Two real client addresses reach the front door here: the controller (the sandbox's veth peer; the attacker) and the
host's own loopback (curl on the host through nginx; alice "from another address"). Both go through nginx, as a
lab user's machine would.
"""

import json
import re
import threading
import time

import pytest
from conftest import ok, root, wait_for, wait_lab_ready, write_root_file

GUARD = "/etc/metalab/guard.json"
BROKER = "/etc/metalab/broker.json"
LOGIN_ERROR = re.compile(r'id="login-error"[^>]*>([^<]+)')


@pytest.fixture
def unlocked(host):
    """alice's failed logins are forgotten after the test (every address, and the per-name count)."""
    yield
    ok(host, "metalab-broker unlock alice")


def in_thread(fn):
    out = {}

    def run():
        started = time.monotonic()
        try:
            out["answer"] = fn()
        finally:
            out["seconds"] = time.monotonic() - started

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


@pytest.fixture
def guard_lock(host):
    """A function that holds the guard's lock as root for SECONDS (what a slow `podman run` in a start does to every
    later start and stop); the holder is ended after the test."""
    lock = json.loads(ok(host, "cat %s", GUARD))["lock"]
    pids = []

    def hold(seconds):
        pid = ok(host, "setsid flock %s sleep %s </dev/null >/dev/null 2>&1 & echo $!", lock, str(seconds)).strip()
        pids.append(pid)
        wait_for(lambda: root(host, "flock -n %s true", lock).rc != 0, 10, "the guard lock held")

    yield hold
    for pid in pids:  # flock and its sleep, which holds the lock too: they are the session setsid made
        root(host, "kill -- -%s", pid)


def test_looped_slow_starts_of_alice_do_not_stall_bobs_jupyterlab(host, portal_client, passwords, stopped, guard_lock):
    ok(host, "metalab-guard start bob")
    wait_lab_ready(host, "bob", timeout=120)
    bob, alice = portal_client(), portal_client()
    bob.login("bob", passwords["bob"])
    alice.login("alice", passwords["alice"])
    csrf = alice.csrf("/")

    def bob_lab():
        return bob.get("/user/bob/api/status", headers={"Accept": "application/json"})

    # The legitimate request, nothing going on: bob's JupyterLab answers with his portal session.
    quiet = in_thread(bob_lab)
    quiet["thread"].join(30)
    assert quiet["answer"].status == 200 and "kernels" in json.loads(quiet["answer"].body), quiet
    workers = int(ok(host, "pgrep -u metalab-portal -f 'gunicorn' | wc -l")) - 1  # less the arbiter

    # The attack: alice's start waits for the guard lock for 20 s; she fires more starts and stops than the portal
    # has worker processes, through the front door.
    guard_lock(20)
    paths = ["/start", "/stop"] * max(3, workers + 1)
    loop = [in_thread(lambda p=p: alice.post(p, {"kind": "cpu", "csrf_token": csrf}, retry_429=False)) for p in paths]
    time.sleep(2)
    during = in_thread(bob_lab)
    during["thread"].join(12)
    assert not during["thread"].is_alive(), "bob's JupyterLab did not answer within 12 s while alice looped starts"
    assert during["answer"].status == 200, during
    print(f"bob's JupyterLab answered in {during['seconds']:.2f}s during the loop ({workers} portal workers)")
    # alice's extra calls were answered at once ("already in progress" or "busy"), not queued behind hers.
    for call in loop:
        call["thread"].join(60)
    prompt = [c for c in loop if c["seconds"] < 10]
    assert len(prompt) >= len(loop) - 1, [(c["answer"].status, round(c["seconds"], 1)) for c in loop]
    assert all(c["answer"].status in (409, 503) for c in prompt), [c["answer"] for c in prompt]
    assert any("already in progress" in c["answer"].body for c in prompt), [c["answer"] for c in prompt]


HOST_LOGIN = r"""
set -e
jar=$(mktemp); trap 'rm -f "$jar"' EXIT
url=https://localhost
# --resolve: localhost is 127.0.0.1 here, whatever /etc/hosts says first: one fixed source address
r="--resolve localhost:443:127.0.0.1"
for attempt in $(seq 1 5); do
  csrf=$(curl -sk $r -c "$jar" -b "$jar" $url/login \
    | sed -n 's/.*name="csrf_token" type="hidden" value="\([^"]*\)".*/\1/p' | head -n1)
  code=$(curl -sk $r -c "$jar" -b "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' -H "Referer: $url/" \
    --data-urlencode "username=$USERNAME" --data-urlencode "password@$PASSFILE" --data-urlencode "csrf_token=$csrf" \
    --data-urlencode next=/ $url/login)
  # nginx's per-address limit on POST /login (not the portal's lockout): wait like a person would
  case "$code" in 429*) sleep 6 ;; *) break ;; esac
done
status=$(curl -sk $r -c "$jar" -b "$jar" -o /dev/null -w '%{http_code}' -H 'Accept: application/json' $url/api/status)
echo "$code $status"
"""


def login_from_the_host(host, user, password):
    """USER logs in through the front door from the host's loopback address: (login answer, /api/status code)."""
    write_root_file(host, "/root/.attack-portal-pass", password)
    write_root_file(host, "/root/.attack-portal-login.sh", HOST_LOGIN, mode="0700")
    try:
        out = ok(host, "USERNAME=%s PASSFILE=/root/.attack-portal-pass sh /root/.attack-portal-login.sh", user).split()
    finally:
        root(host, "rm -f /root/.attack-portal-pass /root/.attack-portal-login.sh")
    return " ".join(out[:-1]), out[-1]


def test_failed_logins_from_one_address_do_not_lock_alice_out_elsewhere(host, portal_client, passwords, unlocked):
    failures = json.loads(ok(host, "cat %s", BROKER)).get("lockout_failures", 5)
    # The legitimate login from the host's loopback, nothing going on.
    assert login_from_the_host(host, "alice", passwords["alice"]) == ("302 https://localhost/", "200")

    # The attack, from the controller's address: failures + 1 wrong passwords for alice.
    attacker = portal_client()
    answers = [
        attacker.post("/login", {"username": "alice", "password": f"guess-{i}-wrong"}, csrf_from="/login")
        for i in range(failures + 1)
    ]
    assert [a.status for a in answers] == [401] * (failures - 1) + [429, 429], answers
    message = LOGIN_ERROR.search(answers[-1].body).group(1)
    assert "from this address" in message and "locked until" in message, message
    # The attacker's address is locked for alice, even with her password, and a claimed X-Forwarded-For does not
    # change the address the portal sees (nginx sets it from the connection).
    for headers in ({}, {"X-Forwarded-For": "198.51.100.7"}):
        answer = attacker.post(
            "/login", {"username": "alice", "password": passwords["alice"]}, csrf_from="/login", headers=headers
        )
        assert answer.status == 429 and "from this address" in answer.body, answer

    # alice from another address (the host's loopback, through nginx) logs in at once and sees her lab.
    assert login_from_the_host(host, "alice", passwords["alice"]) == ("302 https://localhost/", "200")
    # bob from the attacker's address is not affected either (the lockout is per name and address).
    portal_client().login("bob", passwords["bob"])


@pytest.mark.parametrize("name", ["alice\n", "alice%0a", "alice\r\n"])
def test_a_login_name_with_a_trailing_newline_is_not_alice(host, portal_client, passwords, unlocked, name):
    refused = portal_client().post("/login", {"username": name, "password": passwords["alice"]}, csrf_from="/login")
    assert refused.status == 401 and "wrong user name or password" in refused.body, refused
    c = portal_client()
    c.login("alice", passwords["alice"])  # the same harness, the name in full
    assert c.status()["user"] == "alice"
    # The same for her JupyterLab path: /user/alice%0a is nobody's (nginx's "$" matches before a final newline, so
    # the second one reaches the auth check, which refuses it).
    for path in ("/user/alice%0a/api/status", "/user/alice%0a"):
        assert c.get(path).status in (403, 404), path
