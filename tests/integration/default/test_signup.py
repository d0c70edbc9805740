"""End to end (issue 19): in a real browser a newcomer requests access on the portal; the admin approves with
`labctl users approve` (the real command: inventory edit, the site run's users part, her enrollment link mailed from
the lab host); the link arrives on an SMTP server (aiosmtpd) that this test runs on the controller at the sandbox's
veth peer address; she enrolls, sees her lab page, and changes her password on the Account page.

labctl runs against a copy of this scenario's inventory, written from the host's variables, with lab_smtp naming the
test's relay (the scenario's own inventory and its lab_users stay as they are). At the end she is removed again
(`labctl users remove --apply`, state absent) and her portal password and request go, so other suites see the
default users only.
"""

from __future__ import annotations

import email
import ipaddress
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, ok, root, wait_for

NAME = "dora"
ADDRESS = "dora@example.org"
FIRST, SECOND = "dora-first-pass-1", "dora-second-pass-2"
REQUESTS = "/var/lib/metalab/broker/requests.json"
# Ansible's own variables and the connection's facts: not inventory settings.
MAGIC = {
    "inventory_hostname", "inventory_hostname_short", "group_names", "groups", "omit", "playbook_dir",
    "inventory_dir", "inventory_file", "ansible_play_hosts", "ansible_check_mode", "ansible_config_file",
}  # fmt: skip


class Inbox:
    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture(scope="module")
def relay(host):
    """aiosmtpd on the controller's end of the sandbox's veth pair (the .1 of its /30): the lab host reaches it."""
    from aiosmtpd.controller import Controller

    address = host.backend.get_variables().get("ansible_host") or host.backend.host
    peer = str(next(ipaddress.ip_network(f"{address}/30", strict=False).hosts()))
    with socket.socket() as s:
        s.bind((peer, 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname=peer, port=port)
    controller.start()
    try:
        yield inbox, {"host": peer, "port": port, "from": "lab@example.org", "starttls": False}
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def inventory(host, relay, tmp_path_factory) -> Path:
    """This host in a one-file inventory of its own: its variables, lab_users in all.vars, lab_smtp the relay."""
    variables = {k: v for k, v in host.backend.get_variables().items() if k not in MAGIC}
    groups = [g for g in host.backend.get_variables().get("group_names", []) if g not in ("all", "ungrouped")]
    lab_users = variables.pop("lab_users")
    name = host.backend.host
    data = {
        "all": {
            "hosts": {name: variables},
            "vars": {"lab_users": lab_users, "lab_smtp": relay[1]},
            "children": {g: {"hosts": {name: None}} for g in groups},
        }
    }
    path = tmp_path_factory.mktemp("signup-inventory") / "hosts.yml"
    path.write_text("---\n# a copy for test_signup.py\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def labctl(*args, timeout=900):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), METALAB_COLLECTION=str(REPO), NO_COLOR="1")
    env.pop("METALAB_INVENTORY", None)
    started = time.monotonic()
    result = subprocess.run(["labctl", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    print(f"labctl {' '.join(args[:3])}: {time.monotonic() - started:.0f}s")
    return result


@pytest.fixture(scope="module")
def newcomer(host, inventory):
    """No dora anywhere before; removed again after (state absent, her password and request gone)."""
    root(host, "metalab-broker remove %s", NAME)
    root(host, "rm -f %s", REQUESTS)
    yield NAME
    root(host, "metalab-broker remove %s", NAME)
    root(host, "rm -f %s", REQUESTS)
    if f"name: {NAME}" in inventory.read_text():  # approved: she goes again (state absent)
        removed = labctl("users", "remove", NAME, "--apply", "--plain", "-i", str(inventory))
        assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr
    assert not host.user(f"lab-{NAME}").exists


def test_request_access_approve_enroll_log_in_change_password(
    host, base_url, relay, inventory, newcomer, page, portal_client, artifacts
):
    inbox, _ = relay
    started = time.monotonic()
    # The login page offers "Request access"; a bad address is refused with a clear message, nothing recorded.
    page.goto(base_url + "/login")
    page.click("#signup-link")
    page.fill("#name", NAME)
    page.fill("#email", "dora@example")  # the browser's own check lets it through; the portal's does not
    page.fill("#reason", "MSc thesis on protein folding")
    page.click("#signup-button")
    assert "not a valid address" in page.inner_text(".signup-error")
    assert root(host, "test -e %s", REQUESTS).rc != 0
    page.fill("#email", ADDRESS)
    page.click("#signup-button")
    page.wait_for_selector("#signup-done")
    page.screenshot(path=str(artifacts / "signup-1-requested.png"))

    # The admin sees it and approves it (labctl, for real, against this host).
    listed = labctl("users", "requests", "--json", "-i", str(inventory))
    assert listed.returncode == 0, listed.stderr
    assert '"name": "dora"' in listed.stdout and ADDRESS in listed.stdout
    approved = labctl("users", "approve", NAME, "--quota", "1G", "--plain", "-i", str(inventory))
    assert approved.returncode == 0, approved.stdout[-3000:] + approved.stderr
    assert f"her enrollment link went to {ADDRESS}" in approved.stdout
    assert host.user(f"lab-{NAME}").exists
    assert ADDRESS in inventory.read_text()

    # Her link arrives by mail, from the lab host, pointing at this lab's address.
    rcpt, msg = wait_for(lambda: inbox.messages[-1] if inbox.messages else None, 30, "the enrollment mail")
    assert rcpt == [ADDRESS]
    link = re.search(re.escape(base_url) + r"/enroll/[A-Za-z0-9_-]+", msg.get_payload())
    assert link, msg.get_payload()

    # She enrolls in the browser and lands on her lab page.
    page.goto(link.group(0))
    page.fill("#password", FIRST)
    page.fill("#confirm", FIRST)
    page.click("button[type=submit]")
    page.wait_for_selector("#runtime")
    assert page.url == base_url + "/" and "My lab" in page.inner_text("h1")
    page.screenshot(path=str(artifacts / "signup-2-her-lab.png"))

    # A second session of hers, elsewhere; then she changes her password on the Account page.
    elsewhere = portal_client()
    elsewhere.login(NAME, FIRST)
    assert elsewhere.get("/").status == 200
    page.click("#account-link")
    page.fill("#current", FIRST)
    page.fill("#password", SECOND)
    page.fill("#confirm", SECOND)
    page.click("#password-button")
    page.wait_for_selector("text=your password is changed")
    assert page.url == base_url + "/account"
    page.goto(base_url + "/")
    page.wait_for_selector("#runtime")  # this session goes on
    assert elsewhere.get("/").status == 302  # the other one ended
    portal_client().login(NAME, FIRST, expect=401)  # the old password is refused
    portal_client().login(NAME, SECOND)  # the new one works
    page.screenshot(path=str(artifacts / "signup-3-changed.png"))
    print(f"signup: request to changed password: {time.monotonic() - started:.0f}s")


def test_approving_an_unknown_request_changes_nothing(host, inventory, newcomer):
    before = inventory.read_bytes()
    refused = labctl("users", "approve", "nobody", "-i", str(inventory))
    assert refused.returncode != 0
    assert "no pending sign-up request for 'nobody'" in refused.stderr
    assert inventory.read_bytes() == before
    assert not host.user("lab-nobody").exists
    ok(host, "true")
