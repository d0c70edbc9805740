"""End to end (issue 4): a real browser opens alice's JupyterLab through the front door, runs `1+1` in a new
notebook and saves it; the notebook is then in alice's home on the host with `2` in its outputs.

The browser is Debian's chromium, headless, driven by Playwright from the controller; it signs in through the portal
(the front door lets a portal session of alice into /user/alice/ and hands JupyterLab her token, which the browser
never sees). Screenshots are kept in the artifacts directory (see conftest.py).
"""

import json
import time

import pytest
from conftest import ok, root, run_in_new_notebook, wait_for, wait_lab_ready

HOME = "/srv/metalab/homes/alice"
LAB = "/user/alice/lab"


def notebooks(host):
    out = ok(host, "find %s -maxdepth 1 -name 'Untitled*.ipynb' -printf '%%f\\n'", HOME)
    return set(out.split())


@pytest.fixture
def alice_runtime(host):
    """alice's runtime is running (started by the guard here when it is not); bob's is stopped."""
    root(host, "metalab-guard stop bob")
    if root(host, "podman container exists metalab-alice").rc != 0:
        ok(host, "metalab-guard start alice")
    wait_lab_ready(host, "alice")
    return "alice"


def test_browser_runs_a_cell_and_the_notebook_lands_in_the_home(
    host, base_url, passwords, alice_runtime, page, artifacts
):
    before = notebooks(host)
    started = time.monotonic()

    # Sign in through the portal: /user/alice/lab without a session goes to the login page and comes back.
    # (?reset: a fresh workspace with the launcher, whatever an earlier run left open.)
    page.goto(base_url + LAB + "?reset")
    page.wait_for_selector("#login-button")
    assert "/login?next=/user/alice/lab" in page.url
    page.fill("#username", "alice")
    page.fill("#password", passwords["alice"])
    page.click("#login-button")
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    assert page.url.startswith(base_url + LAB)
    page.screenshot(path=str(artifacts / "browser-1-launcher.png"))

    # A new notebook from the launcher's Python 3 card; 1+1 in its first cell.
    run_in_new_notebook(page, "1+1", "2")
    page.keyboard.press("Control+s")
    page.screenshot(path=str(artifacts / "browser-2-notebook.png"))

    # On the host: a new notebook in alice's home, owned by her, with 2 in its outputs.
    def saved():
        for name in notebooks(host) - before:
            doc = json.loads(ok(host, "cat %s/%s", HOME, name))
            outputs = [o for c in doc.get("cells", []) for o in c.get("outputs", [])]
            if any(o.get("data", {}).get("text/plain") in ("2", ["2"]) for o in outputs):
                return name
        return None

    name = wait_for(saved, 60, "a saved notebook with 2 in its outputs in alice's home", interval=2)
    assert host.file(f"{HOME}/{name}").user == "lab-alice"
    print(f"browser: sign-in to saved notebook {name}: {time.monotonic() - started:.1f}s")
    page.screenshot(path=str(artifacts / "browser-3-saved.png"))
    root(host, "rm -f %s/%s", HOME, name)


def test_browser_never_sees_the_token(host, base_url, passwords, alice_runtime, page):
    """The token the front door forwards stays between nginx and JupyterLab: not in any URL, page or cookie."""
    token = ok(host, "metalab-guard token alice").strip()
    seen = []
    page.on("request", lambda req: seen.append(req.url))
    page.goto(base_url + "/login?next=" + LAB + "?reset")
    page.fill("#username", "alice")
    page.fill("#password", passwords["alice"])
    page.click("#login-button")
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    assert token not in page.content()
    assert all(token not in url for url in seen)
    assert all(token not in c["value"] for c in page.context.cookies())
