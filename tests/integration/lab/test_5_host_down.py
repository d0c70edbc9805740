"""A lab host stopped mid-test (issue 17): ml-lab2 (home of bob, and of alice since her move) is powered off. The
portal tells bob, by name, that his home host is not reachable, promptly; carol (homed on the front door) and dora
(ml-lab1) notice nothing: they log in, their status answers, their JupyterLab answers through the one address.
This test is the suite's last: ml-lab2 stays off until molecule's destroy."""

from __future__ import annotations

import html
import socket
import time

from conftest import DOOR, LAB1, LAB2, Lab, PortalClient, wait_for


def lab_answers(lab: Lab, home: str, user: str) -> bool:
    """USER's JupyterLab answers an API request with her token through the front door's address."""
    token = lab.sh(home, f"metalab-guard token {user}").strip()
    answer = PortalClient(lab.base_url).get(f"/user/{user}/api/status", headers={"Authorization": f"token {token}"})
    return answer.status == 200


def listening(record: dict) -> bool:
    try:
        with socket.create_connection((record["ansible_host"], int(record["ansible_port"])), timeout=2):
            return True
    except OSError:
        return False


def test_with_a_lab_host_off_only_its_users_notice(lab: Lab, passwords) -> None:
    for user, home in (("carol", DOOR), ("dora", LAB1)):
        if lab.run(home, f"podman container exists metalab-{user}").rc != 0:
            lab.sh(home, f"metalab-guard start {user}")
        wait_for(lambda u=user, h=home: lab_answers(lab, h, u), 60, f"{user}'s JupyterLab answering")
    bob = PortalClient(lab.base_url)
    bob.login("bob", passwords["bob"])
    assert bob.status()["host"] == LAB2

    # ml-lab2 powers off (its sandbox's systemd ends the container); the front door's address keeps answering.
    lab.sh(LAB2, "systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl poweroff")
    wait_for(lambda: not listening(lab.records[LAB2]), 120, "ml-lab2 off (its sshd gone)", interval=1)
    assert lab.curl(DOOR, "-k", f"https://{lab.records[LAB2]['lab_address']}:8443/") == "000"

    began = time.monotonic()
    page = bob.get("/")
    assert page.status == 503, page
    assert f"bob's home host {LAB2} is not reachable" in html.unescape(page.body)
    assert time.monotonic() - began < 30
    for user, home in (("carol", DOOR), ("dora", LAB1)):
        client = PortalClient(lab.base_url)
        client.login(user, passwords[user])
        status = client.status()
        assert status["host"] == home and status["runtime"]["state"] == "running", status
        assert lab_answers(lab, home, user), f"{user}'s JupyterLab does not answer with {LAB2} off"
