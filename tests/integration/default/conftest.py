"""Shared fixtures of the default scenario's end-to-end tests (test_browser.py, test_portal.py).

The portal's HTTP client and the real browser are in tests/support/browser.py (shared with the lab scenario's suite).
"""

from __future__ import annotations

import base64

import pytest
from browser import (  # noqa: F401 - fixtures (artifacts, chromium, page) are found by pytest in this namespace
    REPO,
    PortalClient,
    artifacts,
    chromium,
    page,
    requirement_missing,
    run_in_new_notebook,
    wait_for,
)

PASSWORDS = {"alice": "alice-portal-pass-1", "bob": "bob-portal-pass-22"}


def root(host, cmd, *args):
    with host.sudo():
        return host.run(cmd, *args)


def ok(host, cmd, *args):
    result = root(host, cmd, *args)
    assert result.rc == 0, f"{cmd % args if args else cmd}: rc={result.rc} {result.stderr} {result.stdout}"
    return result.stdout


def write_root_file(host, path, text, mode="0600"):
    encoded = base64.b64encode(text.encode()).decode()
    ok(host, f"install -m {mode} /dev/null %s && echo %s | base64 -d > %s", path, encoded, path)


def set_password(host, user, password):
    """What `labctl users passwd` runs on the host: the password on stdin, never on a command line."""
    encoded = base64.b64encode((password + "\n").encode()).decode()
    ok(host, "echo %s | base64 -d | metalab-broker passwd %s --stdin", encoded, user)


@pytest.fixture(scope="module")
def base_url(host) -> str:
    """https://ADDRESS[:PORT] of the lab host's front door, as the controller reaches it."""
    variables = host.backend.get_variables() if hasattr(host.backend, "get_variables") else {}
    address = variables.get("ansible_host") or host.backend.host
    port = int(variables.get("metalab_sandbox_https_port") or 443)
    return f"https://{address}" + ("" if port == 443 else f":{port}")


@pytest.fixture
def stopped(host):
    """alice and bob have no runtime, before and after the test."""
    for user in ("alice", "bob"):
        root(host, "metalab-guard stop %s", user)
    yield
    for user in ("alice", "bob"):
        root(host, "metalab-guard stop %s", user)


@pytest.fixture(scope="module")
def passwords(host):
    """alice and bob have portal passwords (set through metalab-broker, unlocked)."""
    for user, password in PASSWORDS.items():
        set_password(host, user, password)
        ok(host, "metalab-broker unlock %s", user)
    return PASSWORDS


@pytest.fixture
def portal_client(base_url):
    return lambda: PortalClient(base_url)


# --- runtimes --------------------------------------------------------------------------------------------------


def wait_lab_ready(host, user, timeout=60):
    """Until USER's JupyterLab answers through the front door (a fresh runtime needs a few seconds to listen)."""
    tok = ok(host, "metalab-guard token %s", user).strip()
    url = f"https://localhost/user/{user}/api/status"

    def ready():
        code = root(host, f"curl -sk -o /dev/null -w '%{{http_code}}' -H 'Authorization: token {tok}' {url}").stdout
        return code == "200"

    wait_for(ready, timeout, f"{user}'s JupyterLab answering")
