"""One address (issue 17): carol (homed on the front door), alice (ml-lab1) and bob (ml-lab2) each log in at the
front door in the real browser, press Start on the portal, open their JupyterLab at https://<front door>/user/NAME/,
run a cell in a new notebook and save it; the notebook is then in her home on her home host, and on no other host.
Their runtimes keep running for the tests after this one (the move refuses a running runtime; a host stopped)."""

from __future__ import annotations

import json
import time

import pytest
from conftest import HOMED, HOMES_DIR, HOSTS, Lab, run_in_new_notebook, wait_for


def notebooks(lab: Lab, name: str, user: str) -> set[str]:
    listing = lab.run(name, f"find {HOMES_DIR}/{user} -maxdepth 1 -name 'Untitled*.ipynb' -printf '%f\\n'")
    return set(listing.stdout.split())


@pytest.mark.parametrize("user", ["carol", "alice", "bob"])
def test_login_start_and_work_in_jupyterlab_through_the_one_address(lab: Lab, passwords, page, artifacts, user):
    home = HOMED[user]
    lab.sh(home, f"metalab-guard stop {user}")
    before = notebooks(lab, home, user)
    started = time.monotonic()

    page.goto(lab.base_url + "/")
    page.wait_for_selector("#login-button")
    page.fill("#username", user)
    page.fill("#password", passwords[user])
    page.click("#login-button")
    page.wait_for_selector("#start-button")
    page.check("input[name=kind][value=cpu]")
    page.click("#start-button")
    page.wait_for_selector("#open-lab", timeout=120_000)
    assert page.inner_text("#runtime-state").strip() == "running"
    # Her runtime runs on her home host, and only there.
    running = {name: lab.run(name, f"podman container exists metalab-{user}").rc == 0 for name in HOSTS}
    assert running == {name: name == home for name in HOSTS}, running
    page.screenshot(path=str(artifacts / f"lab-{user}-1-running.png"), full_page=True)

    page.goto(f"{lab.base_url}/user/{user}/lab?reset")  # a fresh workspace with the launcher
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    assert page.url.startswith(f"{lab.base_url}/user/{user}/lab")
    run_in_new_notebook(page, "6*7", "42")
    page.keyboard.press("Control+s")
    page.screenshot(path=str(artifacts / f"lab-{user}-2-notebook.png"))

    def saved() -> str | None:
        for name in notebooks(lab, home, user) - before:
            doc = json.loads(lab.sh(home, f"cat {HOMES_DIR}/{user}/{name}"))
            outputs = [o for c in doc.get("cells", []) for o in c.get("outputs", [])]
            if any(o.get("data", {}).get("text/plain") in ("42", ["42"]) for o in outputs):
                return name
        return None

    notebook = wait_for(saved, 60, f"a saved notebook with 42 in its outputs in {user}'s home on {home}", interval=2)
    assert lab.sh(home, f"stat -c %U {HOMES_DIR}/{user}/{notebook}").strip() == f"lab-{user}"
    for name in HOSTS:
        if name != home:
            assert lab.run(name, f"ls {HOMES_DIR}/{user}").rc != 0, f"{user} has files on {name}"
    print(f"{user} on {home}: sign-in to saved notebook {time.monotonic() - started:.1f}s")
    lab.sh(home, f"rm -f {HOMES_DIR}/{user}/{notebook}")
