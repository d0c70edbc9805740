"""Runtime start timings, run ON a lab host as root (benchmarks/run.py pipes this file to `sudo python3 -`).

Standard library only (the host has no venv for it). Prints one JSON object on its last line.

    python3 start_bench.py latency USER N        # N interleaved pairs: bare JupyterLab start, metalab start
    python3 start_bench.py concurrent N USER...  # N rounds of every USER pressing Start at the same moment
    python3 start_bench.py profile USER N        # N metalab starts, each step of the guard's start timed

What is timed:
  bare     `podman run -d` of the runtime image with JupyterLab itself as the command (the image's own
           /opt/metalab/bin/start-jupyterlab: same config, same base_url, same home and socket mounts, no
           supervisord, no limits, no guard) until GET <base_url>api/status over its unix socket answers 200.
  metalab  `metalab-guard start USER` until GET https://localhost/user/USER/api/status through the front door
           (nginx) with her token answers 200; also how long the guard command itself took (`guard_s`).
Both sides are polled by the same code (one new connection per attempt, every POLL_S), so the poller's cost and
granularity are the same on both sides. Stops (podman rm -f, metalab-guard stop) are not timed.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

POLL_S = 0.02
GIVE_UP_S = 120.0
GUARD_CONFIG = "/etc/metalab/guard.json"
BARE_NAME = "metalab-bench-bare"
BARE_ROOT = "/run/metalab-bench"


# -- pure helpers (tests/unit/bench/test_start_bench.py) ---------------------------------------------------------


def status_url(base_url: str) -> str:
    """The JupyterLab status API under a base_url ('/user/alice/' -> '/user/alice/api/status')."""
    return "/" + "/".join(p for p in (base_url.strip("/"), "api/status") if p)


def bare_argv(
    podman: str,
    image: str,
    name: str,
    uid: int,
    gid: int,
    home: str,
    sockdir: str,
    env_file: str,
    host_args: Sequence[str] = (),
) -> List[str]:
    """`podman run` of the runtime image with JupyterLab itself as PID 1 (no supervisord, no network, no limits, no
    read-only root): the physical limit. ``host_args``: what this host needs for any container (the guard's
    runtime.extra_args: e.g. --cgroups=disabled in a nested sandbox, the passwd entry of her uid)."""
    return [
        podman, "run", "-d", "--rm", "--name", name, "--user", f"{uid}:{gid}", "--network=none", *host_args,
        "-v", f"{home}:/home/studio-lab-user", "-v", f"{sockdir}:/run/lab", "--workdir", "/home/studio-lab-user",
        "--env-file", env_file, image, "/opt/metalab/bin/start-jupyterlab",
    ]  # fmt: skip


# -- HTTP polling -------------------------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the front door's certificate is the sandbox's own; only the status matters
    return ctx


def get_status(conn: http.client.HTTPConnection, path: str, token: Optional[str]) -> int:
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"} if token else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def wait_200(make_conn: Any, path: str, token_of: Any, t0: float) -> Tuple[float, int, int]:
    """Poll until 200: (seconds since t0, attempts, last status)."""
    attempts, code = 0, 0
    while time.monotonic() - t0 < GIVE_UP_S:
        attempts += 1
        code = get_status(make_conn(), path, token_of())
        if code == 200:
            return time.monotonic() - t0, attempts, code
        time.sleep(POLL_S)
    return -1.0, attempts, code


# -- the two starts -------------------------------------------------------------------------------------------


def sh(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)


def guard_config() -> Dict[str, Any]:
    with open(GUARD_CONFIG, encoding="utf-8") as fh:
        data = json.load(fh)
    rt = data.get("runtime", {})
    return {
        "podman": rt.get("podman", "podman"),
        "image": rt["image"],
        "extra_args": [str(a) for a in rt.get("extra_args", [])],
        "token_dir": rt.get("token_dir", "/etc/metalab/tokens"),
        "users": data.get("users", {}),
    }


def read_token(token_dir: str, user: str) -> Optional[str]:
    try:
        with open(os.path.join(token_dir, user), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def account(cfg: Dict[str, Any], user: str) -> Tuple[int, int, str]:
    """Her uid, gid and home as the guard sees them (guard.json, else the host's account)."""
    raw = cfg["users"].get(user, {})
    if all(k in raw for k in ("uid", "gid", "home")):
        return int(raw["uid"]), int(raw["gid"]), str(raw["home"])
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, pw.pw_dir


def metalab_start(cfg: Dict[str, Any], user: str) -> Dict[str, Any]:
    t0 = time.monotonic()
    start = sh("metalab-guard", "start", user)
    guard_s = time.monotonic() - t0
    if start.returncode != 0:
        return {"user": user, "ok": False, "guard_s": guard_s, "error": start.stderr.strip()[-300:]}
    token = read_token(cfg["token_dir"], user)
    ctx = _insecure()
    seconds, attempts, code = wait_200(
        lambda: http.client.HTTPSConnection("localhost", 443, timeout=5, context=ctx),
        status_url(f"/user/{user}/"),
        lambda: token,
        t0,
    )
    out = {"user": user, "ok": seconds >= 0, "seconds": seconds, "guard_s": guard_s, "attempts": attempts}
    if seconds < 0:
        out["error"] = f"no 200 within {GIVE_UP_S:.0f} s (last {code})"
    return out


def metalab_stop(user: str) -> None:
    res = sh("metalab-guard", "stop", user, "--reason", "admin")
    if res.returncode != 0:
        raise SystemExit(f"metalab-guard stop {user}: {res.stderr.strip()}")


def bare_start(cfg: Dict[str, Any], user: str) -> Dict[str, Any]:
    uid, gid, home = account(cfg, user)
    sockdir = os.path.join(BARE_ROOT, user)
    shutil.rmtree(sockdir, ignore_errors=True)
    os.makedirs(sockdir, mode=0o750)
    os.chown(sockdir, uid, gid)
    token = os.urandom(16).hex()
    env_file = os.path.join(BARE_ROOT, f"{user}.env")
    with open(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        fh.write(f"JUPYTER_TOKEN={token}\nMETALAB_USER={user}\nHOME=/home/studio-lab-user\n")
    argv = bare_argv(cfg["podman"], cfg["image"], BARE_NAME, uid, gid, home, sockdir, env_file, cfg["extra_args"])
    t0 = time.monotonic()
    run = sh(*argv)
    podman_s = time.monotonic() - t0
    if run.returncode != 0:
        return {"ok": False, "podman_s": podman_s, "error": run.stderr.strip()[-300:]}
    seconds, attempts, code = wait_200(
        lambda: UnixHTTPConnection(os.path.join(sockdir, "jupyter.sock")),
        status_url(f"/user/{user}/"),
        lambda: token,
        t0,
    )
    out = {"ok": seconds >= 0, "seconds": seconds, "podman_s": podman_s, "attempts": attempts}
    if seconds < 0:
        out["error"] = f"no 200 within {GIVE_UP_S:.0f} s (last {code})"
    return out


def bare_stop(cfg: Dict[str, Any]) -> None:
    sh(cfg["podman"], "rm", "-f", "--time", "0", BARE_NAME)


def latency(user: str, n: int) -> Dict[str, Any]:
    cfg = guard_config()
    os.makedirs(BARE_ROOT, mode=0o700, exist_ok=True)
    sh("metalab-guard", "stop", user, "--reason", "admin")
    bare_stop(cfg)
    bare: List[Dict[str, Any]] = []
    ours: List[Dict[str, Any]] = []
    errors: List[str] = []
    for i in range(n):
        # Alternate which goes first, so neither side always follows the other's teardown.
        for side in ("bare", "metalab") if i % 2 == 0 else ("metalab", "bare"):
            if side == "bare":
                r = bare_start(cfg, user)
                bare_stop(cfg)
                bare.append(r)
            else:
                r = metalab_start(cfg, user)
                metalab_stop(user)
                ours.append(r)
            if not r["ok"]:
                errors.append(f"{side}: {r.get('error')}")
        if errors:
            break
    shutil.rmtree(BARE_ROOT, ignore_errors=True)
    return {"bare": bare, "metalab": ours, "errors": errors}


def press(cfg: Dict[str, Any], user: str, barrier: threading.Barrier, results: Dict[str, Dict[str, Any]]) -> None:
    barrier.wait()
    results[user] = metalab_start(cfg, user)


def concurrent(users: List[str], rounds: int) -> Dict[str, Any]:
    cfg = guard_config()
    for u in users:
        sh("metalab-guard", "stop", u, "--reason", "admin")
    out: List[List[Dict[str, Any]]] = []
    for _ in range(rounds):
        results: Dict[str, Dict[str, Any]] = {}
        barrier = threading.Barrier(len(users))

        threads = [threading.Thread(target=press, args=(cfg, u, barrier, results)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.append([results[u] for u in users])
        for u in users:
            metalab_stop(u)
    return {"rounds": out}


# The guard's own `start`, run the way /usr/local/bin/metalab-guard runs it (system python3 -I), with each step
# of Lab.start wrapped in a timer. Marks are CLOCK_MONOTONIC (system-wide), so they line up with the caller's.
PROFILE_CODE = r"""
import json, sys, time
t_exec = time.monotonic()
sys.path.insert(0, sys.argv[1])
from metalab.host.guard import cli, engine, files, sessions
from metalab.host.guard import ledger as ledger_mod
marks = [("python start + imports", t_exec, time.monotonic())]
def wrap(obj, name, label):
    orig = getattr(obj, name)
    def timed(*a, **k):
        t0 = time.monotonic()
        try:
            return orig(*a, **k)
        finally:
            marks.append((label, t0, time.monotonic()))
    setattr(obj, name, timed)
wrap(cli, "load_config", "config load")
wrap(ledger_mod.Ledger, "__init__", "ledger open")
wrap(sessions.Lab, "_locked", "lock (gate + flock)")
wrap(sessions.Lab, "reconcile", "reconcile (podman ps + ledger)")
wrap(sessions.Lab, "_history", "ledger history + policy")
wrap(ledger_mod.Ledger, "insert_starting", "ledger insert")
wrap(files, "new_token", "token file")
wrap(files, "ensure_socket_dir", "socket dir")
wrap(files, "mount_socket_tmpfs", "socket tmpfs mount")
wrap(files, "write_env_file", "env file")
wrap(engine.PodmanEngine, "start", "podman run -d")
wrap(ledger_mod.Ledger, "mark_running", "ledger mark running")
wrap(sessions.Lab, "_describe", "describe")
rc = cli.main(["start", sys.argv[2]])
marks.append(("exit", time.monotonic(), time.monotonic()))
sys.stderr.write("\nPROFILE " + json.dumps(marks) + "\n")
sys.exit(rc)
"""


def profile_one(cfg: Dict[str, Any], user: str, install_dir: str, socket_root: str) -> Dict[str, Any]:
    sock = os.path.join(socket_root, user, "jupyter.sock")
    t0 = time.monotonic()
    proc = sh("/usr/bin/python3", "-I", "-c", PROFILE_CODE, install_dir, user)
    t_guard = time.monotonic()
    marks = []
    for line in proc.stderr.splitlines():
        if line.startswith("PROFILE "):
            marks = json.loads(line[len("PROFILE ") :])
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-300:]}
    while not os.path.exists(sock) and time.monotonic() - t0 < GIVE_UP_S:
        time.sleep(0.005)
    t_sock = time.monotonic()
    token = read_token(cfg["token_dir"], user)
    path = status_url(f"/user/{user}/")
    t_direct, _, _ = wait_200(lambda: UnixHTTPConnection(sock), path, lambda: token, t0)
    ctx = _insecure()
    t_door, _, _ = wait_200(
        lambda: http.client.HTTPSConnection("localhost", 443, timeout=5, context=ctx), path, lambda: token, t0
    )
    steps = [(label, round(a - t0, 4), round(b - a, 4)) for label, a, b in marks]
    return {
        "ok": t_door >= 0,
        "steps": steps,
        "guard_returned_s": t_guard - t0,
        "socket_appeared_s": t_sock - t0,
        "socket_200_s": t_direct,
        "frontdoor_200_s": t_door,
    }


def profile(user: str, n: int) -> Dict[str, Any]:
    cfg = guard_config()
    install_dir, socket_root = "/usr/local/lib/metalab", "/run/metalab/sockets"
    with open("/usr/local/bin/metalab-guard", encoding="utf-8") as fh:
        for part in fh.read().split('"'):
            if part.startswith("/") and os.path.isdir(os.path.join(part, "metalab")):
                install_dir = part
    with open(GUARD_CONFIG, encoding="utf-8") as fh:
        socket_root = json.load(fh).get("runtime", {}).get("socket_root", socket_root)
    sh("metalab-guard", "stop", user, "--reason", "admin")
    runs = []
    for _ in range(n):
        runs.append(profile_one(cfg, user, install_dir, socket_root))
        metalab_stop(user)
    return {"runs": runs}


def main(argv: List[str]) -> int:
    if argv[:1] == ["latency"]:
        data = latency(argv[1], int(argv[2]))
    elif argv[:1] == ["profile"]:
        data = profile(argv[1], int(argv[2]))
    elif argv[:1] == ["concurrent"]:
        data = concurrent(argv[2:], int(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
