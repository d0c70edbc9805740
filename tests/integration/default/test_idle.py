"""Idle culling on a converged lab: an idle runtime is stopped (reason idle, home intact), a busy one is kept.

The guard is run by hand with a copy of guard.json whose idle timeout is 60 s, with a warning 30 s before
(`metalab-guard --config COPY run`), so the default scenario's settings (3h/1h under cron) stay as they are for
the other suites. Both runtimes go
through the same guard runs: alice's is left alone, bob's runs a cell (`time.sleep`) in a kernel started through
JupyterLab's own API and websocket, as a notebook would. About 1.5 minutes.
"""

import calendar
import json
import time

from conftest import ok, root, wait_lab_ready, write_root_file

CONFIG = "/etc/metalab/guard.json"
COPY = "/root/metalab-idle-test.json"
CLIENT = "/root/metalab-idle-busy.py"
HOME = "/srv/metalab/homes/alice"
NOTICE = f"{HOME}/.metalab/session-notice.txt"
TIMEOUT = 60
WARNING = 30  # the copy warns 30 s before a stop (warnings as long as the timeout are not sent)

# A notebook's first cell, the way JupyterLab sends it: start a kernel (POST /api/kernels), open its channels
# websocket, send an execute_request, wait until the kernel reports busy, then go away (the cell keeps running).
# Standard library only: it runs with the host's python3 against the runtime's unix socket, as the front door does.
BUSY_CLIENT = r"""
import base64, datetime, http.client, json, os, socket, sys, uuid

user, token = sys.argv[1], sys.argv[2]
path = f"/run/metalab/sockets/{user}/jupyter.sock"
base = f"/user/{user}/api"


class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)


conn = Conn("localhost")
conn.request("POST", base + "/kernels", body=json.dumps({"name": "python3"}),
             headers={"Authorization": "token " + token, "Content-Type": "application/json"})
resp = conn.getresponse()
kernel = json.loads(resp.read())
assert resp.status == 201, (resp.status, kernel)
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(90)
sock.connect(path)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET {base}/kernels/{kernel['id']}/channels HTTP/1.1\r\nHost: localhost\r\n"
              f"Authorization: token {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
data = b""
while b"\r\n\r\n" not in data:
    data += sock.recv(4096)
assert data.startswith(b"HTTP/1.1 101"), data[:200]
session = uuid.uuid4().hex
message = {
    "header": {"msg_id": uuid.uuid4().hex, "session": session, "username": "", "msg_type": "execute_request",
               "version": "5.3", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
    "content": {"code": "import time\ntime.sleep(900)", "silent": False, "store_history": True,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
}
payload = json.dumps(message).encode()
mask = os.urandom(4)
header = bytes([0x81]) + (bytes([0x80 | 126]) + len(payload).to_bytes(2, "big") if len(payload) > 125
                          else bytes([0x80 | len(payload)]))
sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
seen = data
while b"execute_input" not in seen:  # the kernel runs the cell
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit("the kernel's websocket closed before the cell ran")
    seen += chunk
sock.close()
print(kernel["id"])
"""


def guard_run(host):
    return json.loads(ok(host, "metalab-guard --config %s run --json", COPY))


def epoch(iso):
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def described(host, user):
    runtimes = json.loads(ok(host, "metalab-guard --config %s list --json", COPY))
    return next(r for r in runtimes if r["user"] == user)


def test_idle_runtime_is_stopped_and_a_busy_one_kept(host, stopped):
    config = json.loads(ok(host, "cat %s", CONFIG))
    config["policy"]["idle_timeout"] = {"cpu": f"{TIMEOUT}s", "gpu": f"{TIMEOUT}s"}
    config["policy"]["warnings"] = [f"{WARNING}s"]
    write_root_file(host, COPY, json.dumps(config))
    write_root_file(host, CLIENT, BUSY_CLIENT)
    root(host, "rm -f %s", NOTICE)
    try:
        # bob's cell first: alice's idle minute starts after it, so a slow kernel start cannot eat into it.
        ok(host, "metalab-guard start bob")
        wait_lab_ready(host, "bob")
        token = ok(host, "metalab-guard token bob").strip()
        ok(host, "timeout 120 python3 %s bob %s", CLIENT, token)
        ok(host, "metalab-guard start alice")
        ok(host, "runuser -u lab-alice -- sh -c 'echo kept > %s/before-idle.txt'", HOME)
        wait_lab_ready(host, "alice")

        # Just started: nobody is stopped; alice's idle stop is at most a minute away, bob's is a minute from now.
        report = guard_run(host)
        assert report["stopped"] == [] and report["errors"] == [], report
        alice = described(host, "alice")
        assert alice["idle_timeout_seconds"] == TIMEOUT and alice["idle_stop_at"] is not None
        stop_at = epoch(alice["idle_stop_at"])
        assert 0 < stop_at - time.time() <= TIMEOUT + 1

        # Inside the warning: alice is warned that she is idle, bob (busy) is not.
        time.sleep(max(0.0, stop_at - WARNING + 5 - time.time()))
        report = guard_run(host)
        assert report["stopped"] == [] and report["warned"] == ["alice"], report
        notice = ok(host, "cat %s", NOTICE)
        assert "is idle and stops in" in notice and "Any activity keeps it running" in notice

        time.sleep(max(0.0, stop_at - time.time()) + 2)
        report = guard_run(host)
        assert report["stopped"] == [{"user": "alice", "reason": "idle"}], report
        assert root(host, "podman container exists metalab-alice").rc != 0
        assert ok(host, "cat %s/before-idle.txt", HOME).strip() == "kept"
        query = "select end_reason from runtimes where user = ? order by id desc limit 1"
        reason = ok(
            host,
            'python3 -c \'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2], ("alice",))'
            ".fetchone()[0])' %s %s",
            config["ledger"],
            query,
        ).strip()
        assert reason == "idle"

        # bob's cell still runs, long past his last output: his runtime is kept, and its idle clock is now.
        bob = described(host, "bob")
        assert bob["state"] == "running"
        assert epoch(bob["idle_stop_at"]) > time.time() + TIMEOUT - 10
        assert root(host, "podman container exists metalab-bob").rc == 0
    finally:
        root(host, "rm -f %s %s", COPY, CLIENT)
