"""The guard under cron on a converged nspawn lab host: warning, then a stop at the session limit.

SLOW: test_cpu_limit_warns_then_stops takes about 4 minutes (a 3-minute CPU limit for alice, a 1-minute warning,
cron's one-minute granularity). Set METALAB_SKIP_SLOW=1 to skip it.
"""

import base64
import json
import os
import sqlite3  # noqa: F401 - the ledger is read on the host with python3's sqlite3
import time

import pytest
from conftest import ok, root

CONFIG = "/etc/metalab/guard.json"
HOME = "/srv/metalab/homes/alice"
NOTICE = f"{HOME}/.metalab/session-notice.txt"


def test_guard_installed_and_scheduled(host):
    assert host.file("/usr/local/bin/metalab-guard").mode == 0o755
    config = host.file(CONFIG)
    assert (config.user, config.mode) == ("root", 0o600)
    cron = host.file("/etc/cron.d/metalab-guard").content_string
    assert "PATH=" in cron
    assert "* * * * * root metalab-guard --config /etc/metalab/guard.json run" in cron
    assert "@reboot root metalab-guard" in cron
    assert ok(host, "metalab-guard run --json")


@pytest.mark.skipif(os.environ.get("METALAB_SKIP_SLOW") == "1", reason="METALAB_SKIP_SLOW=1")
def test_cpu_limit_warns_then_stops(host):
    """SLOW (~4 min): limit 3m, warning 1m before; cron's guard run warns, then stops within 60 s + grace."""
    original = ok(host, "cat %s", CONFIG)
    config = json.loads(original)
    config["users"]["alice"]["limits"] = {"cpu": "3m"}
    config["policy"]["warnings"] = ["1m"]
    grace = config["runtime"]["grace_seconds"]
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    restore = base64.b64encode(original.encode()).decode()
    root(host, "metalab-guard stop alice")
    root(host, "rm -f %s", NOTICE)
    try:
        ok(host, "echo %s | base64 -d > %s", encoded, CONFIG)
        ok(host, "metalab-guard start alice")
        started = time.time()
        limit_at = started + 180
        # A terminal in the runtime, as a JupyterLab terminal would be: `script` logs what reaches its pty.
        ok(host, "podman exec -d metalab-alice script -qfc 'sleep 600' /tmp/terminal.log")
        # Work saved before the stop must survive it byte for byte.
        ok(host, "runuser -u lab-alice -- sh -c 'head -c 2M /dev/urandom > %s/saved.bin'", HOME)
        saved = ok(host, "sha256sum %s/saved.bin", HOME).split()[0]
        warned_at = terminal_warned_at = stopped_at = None
        while time.time() < limit_at + 60 + grace + 30:
            if warned_at is None and root(host, "test -s %s", NOTICE).rc == 0:
                warned_at = time.time()
            if (
                terminal_warned_at is None
                and "stops in" in root(host, "podman exec metalab-alice cat /tmp/terminal.log").stdout
            ):
                terminal_warned_at = time.time()
            if root(host, "podman container exists metalab-alice").rc != 0:
                stopped_at = time.time()
                break
            time.sleep(5)
        assert warned_at is not None, "no warning reached the notice file"
        assert stopped_at is not None, "the runtime was not stopped"
        assert warned_at < stopped_at
        assert terminal_warned_at is not None and terminal_warned_at < stopped_at, "no warning in the user's terminal"
        assert ok(host, "sha256sum %s/saved.bin", HOME).split()[0] == saved
        assert "stops in" in ok(host, "cat %s", NOTICE)
        assert stopped_at <= limit_at + 60 + grace + 10
        reason = ok(
            host,
            "python3 -c \"import sqlite3; db = sqlite3.connect('/var/lib/metalab/guard/ledger.sqlite'); "
            "print(db.execute(\\\"select end_reason from runtimes where user='alice' order by id desc limit 1\\\")"
            '.fetchone()[0])"',
        ).strip()
        assert reason == "limit"
    finally:
        ok(host, "echo %s | base64 -d > %s", restore, CONFIG)
        root(host, "metalab-guard stop alice")
