"""Usage and metrics on a schedule (lab_metrics: node_exporter): the usage file refreshed by its timer, the textfile in
node_exporter's /metrics with alice's home bytes, her portal lab page showing "X used of 1.0 GiB", and node_exporter
kept off the network (loopback only, no lab_metrics_scrapers)."""

from __future__ import annotations

import json
import re
import socket

import pytest
from conftest import ok, root, wait_for

USAGE = "/var/lib/metalab/usage.json"
HOME = "/srv/metalab/homes/alice"
BIG = f"{HOME}/metrics-test.bin"
SCRAPE = "curl -fsS --noproxy '*' --max-time 10 http://127.0.0.1:9100/metrics"
MiB = 1024 * 1024


def usage(host) -> dict:
    return json.loads(ok(host, "cat %s", USAGE))


def refresh(host) -> dict:
    """What the 5-minute timer runs, now: its service (oneshot: returns when the file is written)."""
    ok(host, "systemctl start metalab-home-usage.service")
    return usage(host)


def home_series(text: str, user: str, name: str = "metalab_home_used_bytes") -> int:
    match = re.search(rf'^{name}{{host="[^"]+",user="{user}"}} (\S+)$', text, re.M)
    assert match, f"no {name} of {user} in /metrics"
    return int(float(match.group(1)))  # node_exporter prints 2.5182208e+07


@pytest.fixture
def alice_file(host):
    """A 24 MiB file of alice's in her home, removed afterwards (and the usage refreshed)."""
    ok(host, "head -c %s /dev/urandom > %s && chown lab-alice:lab-alice %s", str(24 * MiB), BIG, BIG)
    yield BIG
    root(host, "rm -f %s", BIG)
    refresh(host)


def test_timers_and_node_exporter_are_running(host):
    for unit in ("metalab-home-usage.timer", "metalab-metrics.timer", "prometheus-node-exporter.service"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    assert "--web.listen-address=127.0.0.1:9100" in args
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in args


def test_alices_usage_reaches_the_usage_file_metrics_and_portal(host, portal_client, passwords, alice_file):
    data = refresh(host)
    stat = host.file(USAGE)
    assert (stat.user, stat.mode) == ("root", 0o600)
    alice = data["alice"]
    assert alice["source"] == "walk"  # nspawn: no quotas (the metal scenario checks source "quota")
    assert alice["limit_bytes"] == 1024**3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alice["measured_at"])
    assert alice["used_bytes"] >= 24 * MiB
    assert "bob" in data and "carol" not in data  # every present lab user, nobody removed

    ok(host, "systemctl start metalab-metrics.service")
    scraped = ok(host, SCRAPE)
    assert home_series(scraped, "alice") == alice["used_bytes"]
    assert home_series(scraped, "alice", "metalab_home_quota_bytes") == 1024**3
    assert re.search(r'^metalab_runtimes_running\{host="[^"]+",kind="cpu"\} \d+$', scraped, re.M)
    assert "node_textfile_scrape_error 0" in scraped

    client = portal_client()
    client.login("alice", passwords["alice"])
    shown = f"{alice['used_bytes'] / MiB:.1f} MiB used of 1.0 GiB"
    page = wait_for(lambda: (p := client.get("/")).status == 200 and shown in p.body and p, 10, shown)
    assert 'id="quota"' in page.body

    root(host, "rm -f %s", alice_file)
    assert refresh(host)["alice"]["used_bytes"] <= alice["used_bytes"] - 23 * MiB  # the walk sees what she deleted


def test_node_exporter_is_not_reachable_from_outside(host):
    """PAIRED: on the host /metrics answers; from the controller, the same port at the host's address does not, while
    the front door at that address does (the network path itself works)."""
    assert "metalab_" in ok(host, SCRAPE)
    listening = ok(host, "ss -Hltn 'sport = :9100'")
    assert "127.0.0.1:9100" in listening and "*:9100" not in listening and "0.0.0.0:9100" not in listening
    variables = host.backend.get_variables() if hasattr(host.backend, "get_variables") else {}
    address = variables.get("ansible_host") or host.backend.host
    port = int(variables.get("metalab_sandbox_https_port") or 443)
    with socket.create_connection((address, port), timeout=10):
        pass  # the front door: reachable
    with pytest.raises(OSError), socket.create_connection((address, 9100), timeout=3):
        pass
