"""Runtimes end to end on a converged nspawn lab host with lab users alice (gpu: false) and bob.

Everything goes through the real pieces: metalab-guard starts the podman container, nginx proxies
https://localhost/user/<name>/ to the user's JupyterLab unix socket. Tests run in file order and share alice's runtime.
"""

import base64
import json
import time

import pytest
from conftest import ok, root

STATUS = "https://localhost/user/{user}/api/status"
SOCKET = "/run/metalab/sockets/{user}/jupyter.sock"
CONTAINER = "metalab-{user}"
SMALL_PACKAGE = "six"  # pure Python, tiny; fetched from PyPI through the proxy


def write_root_file(host, path, text):
    encoded = base64.b64encode(text.encode()).decode()
    ok(host, "install -m 0600 /dev/null %s && echo %s | base64 -d > %s", path, encoded, path)


def token(host, user):
    # Root-only: /etc/metalab/tokens/USER (0600 in a 0700 directory), new at every start, removed at stop.
    return ok(host, "metalab-guard token %s", user).strip()


def status_code(host, user, tok=None):
    header = f"-H 'Authorization: token {tok}'" if tok else ""
    return root(host, f"curl -sk -o /dev/null -w '%{{http_code}}' {header} {STATUS.format(user=user)}").stdout


def wait_status(host, user, want="200", timeout=20.0):
    deadline = time.monotonic() + timeout
    tok = token(host, user)
    code = ""
    while time.monotonic() < deadline:
        code = status_code(host, user, tok)
        if code == want:
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"{STATUS.format(user=user)} answered {code}, not {want}, within {timeout}s")


def in_runtime(host, user, cmd):
    with host.sudo():
        return host.run("podman exec %s bash -lc %s", CONTAINER.format(user=user), cmd)


@pytest.fixture(scope="module")
def alice(host):
    """alice's runtime, running (started here when it is not)."""
    root(host, "metalab-guard stop bob")
    if root(host, "podman container exists %s", CONTAINER.format(user="alice")).rc != 0:
        started = time.monotonic()
        ok(host, "metalab-guard start alice")
        print(f"start -> 200 through nginx: {wait_status(host, 'alice') - started:.1f}s")
    wait_status(host, "alice")
    yield "alice"
    root(host, "metalab-guard stop alice")


def test_frontdoor_redirects_http_and_speaks_modern_tls_only(host):
    assert "301" in root(host, "curl -s -o /dev/null -w '%{http_code}' http://localhost/user/alice/").stdout
    # The client offers TLS 1.1 for real (SECLEVEL=0: Debian's OpenSSL would refuse it on its own side otherwise):
    # the refusal must come from nginx, as a protocol_version alert; the same client gets TLS 1.2.
    client = "echo | openssl s_client -connect localhost:443 -cipher 'DEFAULT@SECLEVEL=0' %s 2>&1"
    old = root(host, client % "-tls1_1").stdout
    assert "alert protocol version" in old and "Cipher is (NONE)" in old, old
    modern = root(host, client % "-tls1_2").stdout
    assert "Protocol  : TLSv1.2" in modern and "Cipher is (NONE)" not in modern, modern
    headers = ok(host, "curl -skI https://localhost/")
    assert "strict-transport-security" in headers.lower()
    assert "x-content-type-options: nosniff" in headers.lower()


def test_not_running_page(host):
    root(host, "metalab-guard stop bob")
    assert root(host, "metalab-guard token bob").rc == 2  # a stopped runtime has no token
    auth = "-H 'Authorization: token any-token-at-all'"
    page = root(host, f"curl -sk {auth} -w '\\n%{{http_code}}' https://localhost/user/bob/lab").stdout
    assert page.endswith("503")
    assert "not running" in page


def test_api_answers_with_the_users_token_only(host, alice):
    assert status_code(host, alice, token(host, alice)) == "200"
    # Without a token: the portal's login page (no session) -- never the API.
    assert status_code(host, alice) == "302"
    assert "/login" in root(host, f"curl -sk -o /dev/null -w '%{{redirect_url}}' {STATUS.format(user=alice)}").stdout
    assert status_code(host, alice, "a-token-that-is-not-alices") == "403"


def test_other_users_cannot_reach_the_socket(host, alice):
    sock = SOCKET.format(user=alice)
    result = root(host, "sudo -u lab-bob curl -s -o /dev/null --unix-socket %s http://x/user/alice/api/status", sock)
    assert result.rc != 0
    st = ok(host, "stat -c '%%a %%U %%G' %s", sock.rsplit("/", 1)[0]).split()
    assert st == ["750", "lab-alice", "www-data"]


def test_no_token_on_any_command_line(host, alice):
    args = ok(host, "ps -eo args")
    assert token(host, alice) not in args


def test_runtime_identity_and_lockdown(host, alice):
    assert in_runtime(host, alice, "id -un").stdout.strip() == "studio-lab-user"
    assert in_runtime(host, alice, "echo $HOME").stdout.strip() == "/home/studio-lab-user"
    assert in_runtime(host, alice, "command -v sudo").rc != 0
    assert in_runtime(host, alice, "apt-get install -y cowsay").rc != 0
    assert in_runtime(host, alice, "find / -xdev -perm -4000 2>/dev/null").stdout.strip() == ""
    for tool in ("pip --version", "uv --version", "git --version", "aws --version", "jupyter lab --version"):
        assert in_runtime(host, alice, tool).rc == 0, tool


def test_supervisord_restarts_a_killed_jupyterlab(host, alice):
    before = in_runtime(host, alice, "pgrep -f 'jupyter-lab|jupyter lab' | head -1").stdout.strip()
    assert before
    killed = time.monotonic()
    in_runtime(host, alice, f"kill -9 {before}")
    back = wait_status(host, alice, timeout=10.0)
    assert back - killed < 10.0
    assert in_runtime(host, alice, "pgrep -f 'jupyter-lab|jupyter lab' | head -1").stdout.strip() != before


def test_pip_user_install_survives_stop_and_start(host, alice):
    result = in_runtime(host, alice, f"pip install --user --quiet {SMALL_PACKAGE}")
    assert result.rc == 0, result.stderr
    ok(host, "metalab-guard stop alice")
    ok(host, "metalab-guard start alice")
    wait_status(host, alice)
    assert in_runtime(host, alice, f"python -c 'import {SMALL_PACKAGE}'").rc == 0


def sessions(host):
    return [(s["session"], s["user"], s["state"]) for s in json.loads(ok(host, "metalab-guard list --json"))]


def test_bad_requests_are_refused_without_change(host, alice):
    before = sessions(host)
    for cmd, needle in (
        ("metalab-guard start nosuchuser", "unknown user"),
        ("metalab-guard start alice", "already has"),
        ("metalab-guard start alice --gpu", "may not start GPU"),
    ):
        result = root(host, cmd)
        assert result.rc == 2, cmd
        assert needle in result.stderr, result.stderr
    assert sessions(host) == before


def test_gpu_runtime_on_a_host_without_gpus_is_refused(host):
    config = json.loads(ok(host, "cat /etc/metalab/guard.json"))
    assert config["runtime"]["gpus"] == []
    config["users"]["bob"]["gpu"] = True
    write_root_file(host, "/run/metalab/guard-gpu-test.json", json.dumps(config))
    result = root(host, "metalab-guard --config /run/metalab/guard-gpu-test.json start bob --gpu")
    root(host, "rm -f /run/metalab/guard-gpu-test.json")
    assert result.rc == 2
    assert "has no GPUs" in result.stderr
    assert root(host, "podman container exists metalab-bob").rc != 0


def test_stop_ends_everything_and_keeps_home_files(host, alice):
    home = "/srv/metalab/homes/alice"
    ok(host, "sudo -u lab-alice sh -c 'mkdir -p %s/keep && head -c 65536 /dev/urandom > %s/keep/data.bin'", home, home)
    in_runtime(host, alice, "nohup python -c 'import time; time.sleep(600)' >/dev/null 2>&1 &")
    checksum = f"cd {home} && find . -type f ! -path './.metalab/*' -print0 | sort -z | xargs -0 sha256sum"
    before = ok(host, checksum)
    grace = json.loads(ok(host, "cat /etc/metalab/guard.json"))["runtime"]["grace_seconds"]
    started = time.monotonic()
    ok(host, "metalab-guard stop alice")
    assert time.monotonic() - started <= grace + 15
    assert root(host, "podman container exists metalab-alice").rc != 0
    assert "time.sleep(600)" not in ok(host, "ps -eo args")
    assert ok(host, checksum) == before
    # And back, for the tests that follow.
    ok(host, "metalab-guard start alice")
    wait_status(host, alice)
