"""Attack: from inside her runtime, a lab user reaches the host's own services, cloud metadata or private networks.

Runtimes use slirp4netns: every connection a runtime makes is made by its slirp4netns process in the host's network
namespace. container_engine starts slirp4netns with the group metalab-egress, and the nftables table
inet metalab_egress refuses that group's connections to the host itself, loopback, link-local and
lab_runtime_egress_deny, except to the lab's proxy.

Every attack goes through the same helper as a legitimate action that must succeed: a TCP connect (or an HTTP
request) made by python3 in alice's runtime, as her uid, like her JupyterLab terminal. The destinations exist: the
host's sshd and nginx, a listener on the host's loopback, and a neighbour network namespace made for the test (an
address in 169.254.0.0/16 where cloud metadata lives, and one in 192.168.0.0/16), which the host itself reaches
through the same helper. The host is left as found: the neighbour and listeners are removed, and alice's runtime is
stopped again only when this module started it.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from conftest import ok, requirement_missing, root, wait_for

CONTAINER = "metalab-alice"
PROBE_NS = "metalab-egress-probe"
PROBE_LINK = "mlegress0"  # host side of the neighbour's veth pair
METADATA = "169.254.169.254"
PRIVATE = "192.168.240.2"
LOOPBACK_PORT = 18231
PORTAL_PORT = 8081  # the portal (gunicorn) on the host's loopback
NEIGHBOUR_PORT = 80
PYPI_INDEX = "https://pypi.org/simple/six/"

# One helper for every probe: connect (TCP) or fetch (HTTP(S), honouring the *_PROXY environment like pip does).
# Prints one JSON line: {"ok": bool, "error": str, "seconds": float}.
HELPER = r"""
import json, socket, sys, time, urllib.request
kind, target = sys.argv[1], sys.argv[2]
started = time.monotonic()
try:
    if kind == "connect":
        host, port = target.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=8).close()
    else:
        with urllib.request.urlopen(target, timeout=30) as answer:
            answer.read(1)
    result = {"ok": True, "error": ""}
except Exception as exc:
    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
result["seconds"] = round(time.monotonic() - started, 2)
print(json.dumps(result))
"""
HELPER_B64 = base64.b64encode(HELPER.encode()).decode()
HELPER_CMD = f"python3 -c \"import base64; exec(base64.b64decode('{HELPER_B64}'))\""


def _parse(result):
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"helper printed nothing: rc={result.rc} {result.stdout} {result.stderr}"
    return json.loads(lines[-1])


def from_runtime(host, ids, kind, target):
    """The helper as alice inside her runtime (her uid and gid, like her JupyterLab terminal)."""
    return _parse(root(host, f"podman exec --user {ids} {CONTAINER} {HELPER_CMD} %s %s", kind, target))


def from_host(host, kind, target, netns=None):
    """The same helper as root on the lab host (or in the neighbour namespace): the control."""
    prefix = f"ip netns exec {netns} " if netns else ""
    return _parse(root(host, f"{prefix}{HELPER_CMD} %s %s", kind, target))


def inspect(host):
    return json.loads(ok(host, "podman inspect %s", CONTAINER))[0]


def refused(result):
    # Refused at once by the filter (connection refused or unreachable), not a timeout that a slow path could cause.
    return not result["ok"] and result["seconds"] < 5


@pytest.fixture(scope="module")
def alice(host):
    """alice's runtime, running; her uid:gid. Stopped at the end only when this module started it."""
    started_here = root(host, "podman container exists %s", CONTAINER).rc != 0
    if started_here:
        ok(host, "metalab-guard start alice")
    wait_for(
        lambda: root(host, "podman exec %s true", CONTAINER).rc == 0,
        60,
        "alice's runtime accepts podman exec",
    )
    ids = inspect(host)["Config"]["User"]
    if ":" not in ids:
        ids = "{}:{}".format(ok(host, "id -u lab-alice").strip(), ok(host, "id -g lab-alice").strip())
    yield ids
    if started_here:
        root(host, "metalab-guard stop alice")


@pytest.fixture(scope="module")
def host_address(host):
    """The lab host's own address (the one admins reach it on)."""
    address = ok(host, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1").strip()
    assert address
    return address


CLEANUP = (
    f"pkill -f '[h]ttp.server {LOOPBACK_PORT}' ; "  # [h]: never this shell's own command line
    f"ip netns pids {PROBE_NS} 2>/dev/null | xargs -r kill ; "
    f"ip link del {PROBE_LINK} 2>/dev/null ; ip netns del {PROBE_NS} 2>/dev/null ; true"
)


def start_listeners(host):
    """A web server on the host's loopback, and a neighbour namespace answering on METADATA and PRIVATE."""
    root(host, CLEANUP)
    ok(host, f"ip netns add {PROBE_NS}")
    ok(host, f"ip link add {PROBE_LINK} type veth peer name eth0 netns {PROBE_NS}")
    ok(host, f"ip addr add 169.254.169.1/24 dev {PROBE_LINK} && ip addr add 192.168.240.1/24 dev {PROBE_LINK}")
    ok(host, f"ip link set {PROBE_LINK} up")
    ok(host, f"ip -n {PROBE_NS} addr add {METADATA}/24 dev eth0 && ip -n {PROBE_NS} addr add {PRIVATE}/24 dev eth0")
    ok(host, f"ip -n {PROBE_NS} link set eth0 up && ip -n {PROBE_NS} link set lo up")
    # Bounded: each server ends by itself after 10 minutes if the teardown never runs.
    ok(
        host,
        f"ip netns exec {PROBE_NS} nohup timeout 600 python3 -m http.server {NEIGHBOUR_PORT} --bind 0.0.0.0 "
        ">/dev/null 2>&1 &",
    )
    ok(host, f"nohup timeout 600 python3 -m http.server {LOOPBACK_PORT} --bind 127.0.0.1 >/dev/null 2>&1 &")
    wait_for(
        lambda: (
            from_host(host, "connect", f"{METADATA}:{NEIGHBOUR_PORT}")["ok"]
            and from_host(host, "connect", f"127.0.0.1:{LOOPBACK_PORT}")["ok"]
        ),
        20,
        "the test's listeners answer the host",
    )


@pytest.fixture(scope="module")
def listeners(host):
    start_listeners(host)
    yield
    root(host, CLEANUP)


def test_runtime_slirp4netns_runs_with_the_filtered_group(host, alice):
    gid = ok(host, "getent group metalab-egress | cut -d: -f3").strip()
    assert gid, "no group metalab-egress"
    assert inspect(host)["State"]["Running"]
    pids = ok(host, "pgrep -x slirp4netns || true").split()
    assert pids, f"no slirp4netns process for {CONTAINER}"
    # Gid: real, effective, saved, filesystem; nftables matches the socket's (the filesystem gid).
    gids = {p: ok(host, "awk '/^Gid:/ {print $5}' /proc/%s/status", p).strip() for p in pids}
    assert set(gids.values()) == {gid}, f"every runtime's slirp4netns runs with group metalab-egress: {gids}"
    assert "table inet metalab_egress" in ok(host, "nft list tables")


def test_pypi_through_the_labs_proxy_works(host, alice):
    env = ok(host, "podman exec %s env", CONTAINER)
    proxy = next((line.split("=", 1)[1] for line in env.splitlines() if line.startswith("HTTPS_PROXY=")), "")
    if not proxy:
        requirement_missing("this lab has no lab_http_proxy; runtimes go out directly")
    proxy_hostport = proxy.split("://", 1)[-1].rstrip("/").rsplit("@", 1)[-1]
    assert from_runtime(host, alice, "connect", proxy_hostport)["ok"]
    answer = from_runtime(host, alice, "fetch", PYPI_INDEX)
    assert answer["ok"], answer
    result = root(host, f"podman exec --user {alice} {CONTAINER} pip index versions --no-cache-dir six")
    assert result.rc == 0 and "six" in result.stdout, result.stderr
    # git over HTTPS through the proxy: PyPI's server answers (no git repository there), so the path works.
    git = root(
        host,
        f"podman exec --user {alice} {CONTAINER} sh -c 'GIT_TERMINAL_PROMPT=0 git ls-remote %s 2>&1'",
        PYPI_INDEX,
    )
    assert "not found" in git.stdout and "connect" not in git.stdout.lower(), git.stdout


def test_host_own_services_are_refused(host, alice, host_address):
    # The control: sshd, and the front door on whichever of 80/443 it serves, answer on the host's address.
    ports = [port for port in (22, 80, 443) if from_host(host, "connect", f"{host_address}:{port}")["ok"]]
    assert 22 in ports and len(ports) >= 2, f"control: the host's sshd and front door answer ({ports})"
    for port in ports:
        answer = from_runtime(host, alice, "connect", f"{host_address}:{port}")
        assert refused(answer), (port, answer)


def test_host_loopback_is_refused(host, alice, listeners):
    # The control: the test's listener, and the portal's own port when it has one on the loopback.
    ports = [port for port in (LOOPBACK_PORT, PORTAL_PORT) if from_host(host, "connect", f"127.0.0.1:{port}")["ok"]]
    assert LOOPBACK_PORT in ports
    # 10.0.2.2 is slirp4netns's alias of the host; podman keeps it off the host's loopback, and the filter refuses
    # loopback for slirp4netns anyway. 127.0.0.1 in the runtime is the runtime's own loopback.
    for target in [f"10.0.2.2:{port}" for port in [*ports, 22]] + [f"127.0.0.1:{LOOPBACK_PORT}"]:
        answer = from_runtime(host, alice, "connect", target)
        assert not answer["ok"], (target, answer)


def test_metadata_and_private_addresses_are_refused(host, alice, listeners):
    for address in (METADATA, PRIVATE):
        target = f"{address}:{NEIGHBOUR_PORT}"
        assert from_host(host, "connect", target)["ok"], f"control: the host reaches {target}"
        answer = from_runtime(host, alice, "connect", target)
        assert refused(answer), (target, answer)
        # (No HTTP fetch here: the runtime's proxy settings would send it to the lab's proxy, whose policy is its
        # own; the runtime's direct path is what this filter closes.)


def refusals(host):
    rules = ok(host, "nft list chain inet metalab_egress refuse")
    return sum(int(n) for n in re.findall(r"packets (\d+)", rules))


def test_filter_refusals_are_counted(host, alice, listeners):
    # Admins see refusals in the table's counters (nft list table inet metalab_egress).
    before = refusals(host)
    assert not from_runtime(host, alice, "connect", f"{METADATA}:{NEIGHBOUR_PORT}")["ok"]
    assert refusals(host) > before
