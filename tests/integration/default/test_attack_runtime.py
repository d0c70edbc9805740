"""Attacks from inside a runtime and with a portal session, each paired with the legitimate action through the same
harness, so that a broken harness cannot pass (docs/security.md has the table of boundaries and their tests).

"Inside her runtime" is `podman exec` into metalab-<user> as her uid: the same user, capabilities, seccomp filter
and no-new-privileges as the terminal JupyterLab gives her. Portal sessions are real logins through the front door.
alice and bob both run a runtime here; the module stops both at the end.
"""

import base64
import json
import secrets
import socket
import ssl
import time
from urllib.parse import urlsplit

import pytest
from conftest import PortalClient, ok, root, wait_for, wait_lab_ready, write_root_file

HOMES = "/srv/metalab/homes"
FOREIGN = "https://people.example.org"  # a page on another site (same registrable domain as a real lab, say)


def account(host, user):
    uid, gid = ok(host, "id -u lab-%s", user).strip(), ok(host, "id -g lab-%s", user).strip()
    return f"{uid}:{gid}"


def inside(host, user, cmd):
    """Run CMD in USER's runtime as her uid (what her JupyterLab terminal runs)."""
    return root(host, "podman exec --user %s metalab-%s sh -c %s", account(host, user), user, cmd)


def token(host, user):
    return ok(host, "metalab-guard token %s", user).strip()


def host_curl(host, path, tok=None, extra=""):
    auth = f"-H 'Authorization: token {tok}'" if tok else ""
    return root(host, f"curl -sk -o /dev/null -w '%{{http_code}}' {auth} {extra} https://localhost{path}").stdout


@pytest.fixture(scope="module")
def running(host):
    """alice's and bob's runtimes, freshly started."""
    for user in ("alice", "bob"):
        root(host, "metalab-guard stop %s", user)
        ok(host, "metalab-guard start %s", user)
    for user in ("alice", "bob"):
        wait_lab_ready(host, user)
    yield
    for user in ("alice", "bob"):
        root(host, "metalab-guard stop %s", user)


# --- 4. disk outside the quota -----------------------------------------------------------------------------------


def test_scratch_space_is_bounded_tmpfs_and_the_image_is_read_only(host, running):
    free_before = int(ok(host, "df --output=avail -B1 / | tail -1"))
    fill = inside(host, "alice", "dd if=/dev/zero of=/tmp/fill bs=1M count=1500")
    assert fill.rc != 0 and "No space left on device" in fill.stderr, fill.stderr
    written = int(inside(host, "alice", "stat -c %s /tmp/fill").stdout)
    assert written <= 1024**3  # lab_runtime_scratch /tmp: 1g
    # tmpfs is memory: the host's disk did not get the gigabyte (other tests may write a little meanwhile)
    assert free_before - int(ok(host, "df --output=avail -B1 / | tail -1")) < 200 * 1024**2
    inside(host, "alice", "rm -f /tmp/fill")
    for path in ("/fill", "/opt/fill", "/var/fill", "/etc/fill", "/usr/local/fill", "/var/lib/fill"):
        result = inside(host, "alice", f"touch {path}")
        assert result.rc != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
    # the legitimate action through the same harness: her home takes what she writes, and the host sees it there
    assert inside(host, "alice", "dd if=/dev/zero of=$HOME/keep.bin bs=1M count=20").rc == 0
    assert int(ok(host, "stat -c %%s %s/alice/keep.bin", HOMES)) == 20 * 1024**2
    inside(host, "alice", "rm -f $HOME/keep.bin")


def test_socket_directory_cannot_fill_the_hosts_run(host, running):
    run_free = int(ok(host, "df --output=avail -B1 /run | tail -1"))
    result = inside(host, "alice", "dd if=/dev/zero of=/run/lab/fill bs=1M count=50")
    assert result.rc != 0 and "No space left on device" in result.stderr
    assert int(ok(host, "stat -c %s /run/metalab/sockets/alice/fill")) <= 1024**2
    assert run_free - int(ok(host, "df --output=avail -B1 /run | tail -1")) < 1024**2
    inside(host, "alice", "rm -f /run/lab/fill")
    assert "tmpfs" in ok(host, "findmnt -n -o FSTYPE /run/metalab/sockets/alice")
    # her JupyterLab's socket is still there and answers (the legitimate use of that directory)
    assert host_curl(host, "/user/alice/api/status", token(host, "alice")) == "200"


def test_what_a_runtime_prints_is_kept_bounded_on_the_host(host, running):
    log = ok(host, "podman inspect metalab-alice --format '{{.HostConfig.LogConfig.Path}}'").strip()
    marker = f"alice-log-line-{secrets.token_hex(4)}"
    assert inside(host, "alice", f"echo {marker} > /proc/1/fd/1").rc == 0
    assert marker in ok(host, "podman logs metalab-alice")  # the log works ...
    assert inside(host, "alice", "head -c 40000000 /dev/zero | tr '\\0' x > /proc/1/fd/1").rc == 0
    assert int(ok(host, "stat -c %%s %s", log)) <= 11 * 1024**2  # ... and 40 MB of output did not grow it past 10m


# --- 3. another site's page, and other users' runtimes, through the front door ---------------------------------


@pytest.fixture(scope="module")
def sessions(host, base_url, passwords, running):
    clients = {}
    for user in ("alice", "bob"):
        clients[user] = PortalClient(base_url)
        clients[user].login(user, passwords[user])
    return clients


def terminals(client, user, origin=None):
    headers = {"Accept": "application/json"}
    if origin:
        headers["Origin"] = origin
    answer = client.get(f"/user/{user}/api/terminals", headers=headers)
    return answer.status, (json.loads(answer.body) if answer.status == 200 else None)


def test_another_sites_page_cannot_drive_her_runtime(sessions, base_url):
    alice = sessions["alice"]
    wait_for(lambda: terminals(alice, "alice")[0] == 200, 30, "alice's JupyterLab through her session")
    before = terminals(alice, "alice")[1]
    attack = alice.request("POST", "/user/alice/api/terminals", data={}, headers={"Origin": FOREIGN})
    assert attack.status == 403, attack
    for site, mode in (("same-site", "cors"), ("cross-site", "no-cors")):
        sneaky = alice.get("/user/alice/api/terminals", headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode})
        assert sneaky.status == 403, (site, mode, sneaky)
    assert terminals(alice, "alice")[1] == before  # nothing was made
    # the lab's own page does the same, and gets a terminal
    own = alice.request("POST", "/user/alice/api/terminals", data={}, headers={"Origin": base_url})
    assert own.status == 200, own
    name = json.loads(own.body)["name"]
    assert alice.request("DELETE", f"/user/alice/api/terminals/{name}", headers={"Origin": base_url}).status == 204


def websocket_status(base_url, path, cookies, origin):
    """The status of a websocket handshake (101 = upgraded) sent like a browser would."""
    parts = urlsplit(base_url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection((parts.hostname, parts.port or 443), timeout=30)
    with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\nCookie: {cookies}\r\n\r\n"
        )
        tls.sendall(request.encode())
        return int(tls.recv(4096).split(b" ", 2)[1])


def test_another_sites_page_cannot_open_her_websockets(sessions, base_url):
    jar = sessions["alice"].jar
    cookies = "; ".join(f"{c.name}={c.value}" for c in jar)
    path = "/user/alice/api/events/subscribe"
    assert websocket_status(base_url, path, cookies, FOREIGN) == 403
    assert websocket_status(base_url, path, cookies, base_url) == 101


def test_her_session_opens_only_her_runtime(sessions, base_url):
    alice, bob = sessions["alice"], sessions["bob"]
    assert terminals(alice, "bob")[0] == 403
    assert alice.request("POST", "/user/bob/api/terminals", data={}, headers={"Origin": base_url}).status == 403
    assert terminals(bob, "bob")[0] == 200  # bob's own session does


# --- tokens -------------------------------------------------------------------------------------------------------


def test_a_token_lives_as_long_as_its_runtime(host, running):
    old = token(host, "alice")
    assert host_curl(host, "/user/alice/api/status", old) == "200"
    assert host_curl(host, "/user/bob/api/status", old) == "403"  # her token never opens bob's runtime
    ok(host, "metalab-guard stop alice")
    assert root(host, "metalab-guard token alice").rc == 2  # nobody is handed a stopped runtime's token
    assert host_curl(host, "/user/alice/api/status", old) == "503"
    ok(host, "metalab-guard start alice")
    wait_lab_ready(host, "alice")
    new = token(host, "alice")
    assert new != old
    assert host_curl(host, "/user/alice/api/status", old) == "403"
    assert host_curl(host, "/user/alice/api/status", new) == "200"


# --- other users' files, token, socket, kernels and notices, from inside a runtime ------------------------------


def test_bobs_files_and_notices_are_nowhere_in_alices_runtime(host, running):
    name = f"bob-only-{secrets.token_hex(6)}"
    assert inside(host, "bob", f"echo secret > $HOME/{name} && mkdir -p $HOME/.metalab && cp $HOME/{name} "
                               f"$HOME/.metalab/{name}.txt").rc == 0  # fmt: skip
    find = "find / \\( -path /proc -o -path /sys \\) -prune -o -name '{}*' -print 2>/dev/null"
    assert name in inside(host, "bob", find.format(name)).stdout  # bob finds his own
    assert inside(host, "alice", find.format(name)).stdout.strip() == ""
    assert inside(host, "alice", f"ls {HOMES} /etc/metalab /run/metalab").rc != 0
    inside(host, "bob", f"rm -f $HOME/{name} $HOME/.metalab/{name}.txt")


def test_bobs_token_and_socket_are_out_of_alices_reach(host, running):
    bob_token = token(host, "bob")
    assert bob_token in inside(host, "bob", "cat /proc/self/environ | tr '\\0' '\\n'").stdout
    seen = inside(host, "alice", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ls -a /run/lab").stdout
    assert bob_token not in seen and "jupyter.sock" in seen  # only her own socket
    assert inside(host, "alice", "ls /run/metalab/sockets/bob").rc != 0
    # the front door's user reaches bob's socket on the host (what it is for)
    probe = "curl -s -o /dev/null -w '%%{http_code}' --unix-socket /run/metalab/sockets/bob/jupyter.sock "
    probe += "-H 'Authorization: token %s' http://x/user/bob/api/status"
    assert ok(host, "runuser -u www-data -- " + probe, bob_token) == "200"


def test_bobs_processes_and_kernels_are_out_of_alices_reach(host, running):
    bob_token = token(host, "bob")
    made = root(host, f"curl -sk -X POST -H 'Authorization: token {bob_token}' https://localhost/user/bob/api/kernels")
    kernel = json.loads(made.stdout)["id"]
    connection = wait_for(
        lambda: inside(host, "bob", f"cat $JUPYTER_RUNTIME_DIR/kernel-{kernel}.json").stdout,
        60,
        "bob's kernel connection file",
    )
    port = json.loads(connection)["shell_port"]
    probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3)'"
    assert inside(host, "bob", probe).rc == 0  # bob's own runtime reaches his kernel
    assert inside(host, "alice", probe).rc != 0
    assert "ipykernel" in inside(host, "bob", "ps -eo args").stdout
    alice_ps = inside(host, "alice", "ps -eo args").stdout
    assert "ipykernel" not in alice_ps
    for host_process in ("sshd", "nginx", "cron", "gunicorn"):
        assert host_process not in alice_ps
        assert host_process in ok(host, "ps -eo args")
    root(
        host,
        f"curl -sk -X DELETE -H 'Authorization: token {bob_token}' https://localhost/user/bob/api/kernels/{kernel}",
    )


# --- 2. enforcement that nobody can stall (last: the loop below leaves alice's runtime stopped) ----------------------


def test_only_root_can_create_or_hold_the_guard_lock(host):
    ok(host, "metalab-guard run")  # the lock file exists
    assert ok(host, "stat -c '%U %a' /run/metalab").split() == ["root", "755"]
    assert ok(host, "stat -c '%U %a' /run/metalab/guard.lock").split() == ["root", "600"]
    for path in ("/run/metalab/guard.lock", "/run/metalab/guard.lock.gate"):
        assert root(host, "runuser -u nobody -- flock -n %s true", path).rc != 0
        assert root(host, "flock -n %s true", path).rc == 0  # the same command as root takes it
    assert root(host, "runuser -u nobody -- touch /run/metalab/planted").rc != 0
    entries = [ln for ln in host.file("/etc/cron.d/metalab-guard").content_string.splitlines() if ln[:1] in "*@"]
    assert entries and not any("/run/lock" in ln or "flock" in ln for ln in entries)


def test_the_old_cron_lock_trick_no_longer_stops_enforcement(host):
    """Any local account holding /run/lock/metalab-guard.cron.lock once made every guard run skip."""
    stamp = "/var/lib/metalab/guard/guard.last-run"
    holder = ok(
        host, "runuser -u nobody -- sh -c 'flock /run/lock/metalab-guard.cron.lock sleep 120 >/dev/null 2>&1 & echo $!'"
    ).strip()
    try:
        before = float(ok(host, "stat -c %%Y %s", stamp))
        time.sleep(1.1)
        # cron's own line, as cron runs it
        line = next(ln for ln in host.file("/etc/cron.d/metalab-guard").content_string.splitlines() if ln[:1] == "*")
        command = line.split(" root ", 1)[1]
        ok(host, "sh -c %s", command)
        assert float(ok(host, "stat -c %%Y %s", stamp)) > before
    finally:
        root(host, "kill %s", holder)
        root(host, "pkill -u nobody -x sleep")


def test_a_stuck_lock_makes_the_run_give_up_visibly(host):
    """The pair of the test above: a lock that really is held (a start hanging as root) is waited for, then reported."""
    config = json.loads(ok(host, "cat /etc/metalab/guard.json"))
    config["run_lock_wait"] = 2
    write_root_file(host, "/run/metalab/guard-test.json", json.dumps(config))
    holder = ok(host, "sh -c 'flock /run/metalab/guard.lock sleep 30 >/dev/null 2>&1 & echo $!'").strip()
    try:
        time.sleep(0.5)
        result = root(host, "metalab-guard --config /run/metalab/guard-test.json run --json")
        assert result.rc == 1 and json.loads(result.stdout)["skipped"] is True, result.stdout
        assert "stayed busy" in result.stderr
        assert float(ok(host, "stat -c %Y /var/lib/metalab/guard/guard.last-skip")) >= time.time() - 600
    finally:
        root(host, "kill %s", holder)
        root(host, "rm -f /run/metalab/guard-test.json")
    assert json.loads(ok(host, "metalab-guard run --json"))["skipped"] is False


def test_looping_start_and_stop_cannot_keep_the_guard_out(host):
    loop = "while :; do metalab-guard start alice; metalab-guard stop alice; done >/dev/null 2>&1"
    looper = ok(host, "sh -c %s", f"{loop} & echo $!").strip()
    try:
        time.sleep(3)
        result = root(host, "metalab-guard run --json")
        assert result.rc == 0 and json.loads(result.stdout)["skipped"] is False, (result.stdout, result.stderr)
    finally:
        root(host, "kill %s", looper)
        wait_for(lambda: root(host, "pgrep -f 'metalab-guard (start|stop) alice'").rc != 0, 60, "the loop's last op")
        root(host, "metalab-guard stop alice")
