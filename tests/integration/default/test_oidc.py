"""Single sign-on (issue 19) in the real browser: the default scenario logs in with passwords and OpenID Connect
(lab_portal_auth: [password, oidc], molecule/default/molecule.yml). The provider is oidc-provider-mock, run here on
the controller at the sandbox's veth peer (the .1 of its /30, which the lab host reaches directly) on a fixed port,
over plain http on that private link (docs/security.md). The browser clicks "Log in with Lab ID", picks a subject
at the provider and comes back: alice lands in her lab; an account that maps to no lab user and one from a domain
the lab does not accept get the login page with the broker's message and no session.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from conftest import ok, requirement_missing

PORT = 9401  # lab_portal_oidc.issuer in molecule/default/molecule.yml


@pytest.fixture(scope="module")
def provider(host):
    """oidc-provider-mock on ADDRESS:9401, ADDRESS being the controller's end of the sandbox's link."""
    variables = host.backend.get_variables() if hasattr(host.backend, "get_variables") else {}
    address = str(variables.get("ansible_host") or host.backend.host).rsplit(".", 1)[0] + ".1"
    try:
        import oidc_provider_mock  # noqa: F401
    except ImportError:
        requirement_missing("oidc-provider-mock is not installed (pip install -e '.[dev]')")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", address, "--port", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((address, PORT), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "oidc-provider-mock exited"
                assert time.monotonic() < deadline, f"oidc-provider-mock does not listen on {address}:{PORT}"
                time.sleep(0.2)
        yield f"http://{address}:{PORT}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sign_in(page, base_url, subject):
    page.goto(base_url + "/login")
    page.click("#sso-login")
    page.get_by_placeholder("sub").fill(subject)
    page.get_by_role("button", name="Authorize", exact=True).click()
    page.wait_for_url(base_url + "/**")


def test_alice_signs_in_at_the_provider_and_lands_in_her_lab(host, base_url, provider, page):
    sign_in(page, base_url, "alice@lab.test")
    page.wait_for_selector("text=My lab")
    assert page.url == base_url + "/"
    assert "alice" in page.inner_text("body")
    # The client secret is the portal's alone; the broker checked the token without it.
    secret = host.file("/etc/metalab/portal-oidc-secret")
    assert (secret.user, secret.group, secret.mode) == ("metalab-portal", "metalab-portal", 0o600)
    assert "single sign-on of alice" in ok(host, "journalctl -u metalab-broker --since -5min --no-pager -q")


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("mallory@lab.test", "your account mallory@lab.test is not a user of this lab"),
        ("alice@elsewhere.test", "your account alice@elsewhere.test is not from a domain this lab accepts"),
    ],
)
def test_an_identity_that_is_no_lab_user_gets_a_message_and_no_session(base_url, provider, page, subject, message):
    sign_in(page, base_url, subject)
    page.wait_for_selector("#login-error")
    assert message in page.inner_text("#login-error")
    page.goto(base_url + "/")
    page.wait_for_selector("#sso-login")
    assert "/login" in page.url
