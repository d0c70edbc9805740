"""The lab user's side of the end-to-end suites (molecule's default and lab scenarios): the portal's HTTP client and the
real browser (Debian's chromium, headless, driven by Playwright; never a downloaded one). Both run on the controller
and reach the lab through its one address, like a lab user's machine would. Screenshots go to $METALAB_ARTIFACTS,
else artifacts/ at the repository root (gitignored).

The suites' conftest.py import the fixtures from here (pytest finds fixtures in a conftest module's namespace).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("METALAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
    "--no-proxy-server",
]


def requirement_missing(reason):
    """Skip, except in make test (METALAB_REQUIRE_ALL=1), where a missing requirement is a failure."""
    if os.environ.get("METALAB_REQUIRE_ALL") == "1":
        pytest.fail(f"requirement missing: {reason}")
    pytest.skip(reason)


def wait_for(predicate, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("METALAB_ARTIFACTS") or REPO / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the portal over HTTP (standard library only) --------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers, body: str, url: str) -> None:
        self.status, self.headers, self.body, self.url = status, headers, body, url

    @property
    def location(self) -> str:
        return self.headers.get("Location", "") if self.headers else ""

    def __repr__(self) -> str:
        return f"<{self.status} {self.url} {self.location} {self.body[:300]!r}>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class PortalClient:
    """One browser-like client of the front door: a cookie jar, CSRF tokens from the forms, no redirects followed."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.jar = http.cookiejar.CookieJar()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect,
        )

    def request(self, method, path, data=None, headers=None, retry_429=True) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        hdrs = {"Referer": self.base + "/", "Accept": "text/html"}
        hdrs.update(headers or {})
        deadline = time.monotonic() + 90
        while True:
            req = urllib.request.Request(self.base + path, data=body, method=method, headers=hdrs)
            try:
                with self.opener.open(req, timeout=90) as resp:
                    answer = Answer(resp.status, resp.headers, resp.read().decode(errors="replace"), path)
            except urllib.error.HTTPError as exc:
                answer = Answer(exc.code, exc.headers, exc.read().decode(errors="replace"), path)
            # nginx's limit on POST /login per address: these tests share one address, so wait like a person would.
            # (The portal answers 429 itself for a locked account, with its login page: that one is the answer.)
            limited = answer.status == 429 and 'id="login-error"' not in answer.body
            if limited and retry_429 and "/login" in path and time.monotonic() < deadline:
                time.sleep(6)
                continue
            return answer

    def get(self, path, **kwargs) -> Answer:
        return self.request("GET", path, **kwargs)

    def csrf(self, path="/login") -> str:
        page = self.get(path)
        match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.body)
        assert match, f"no CSRF token in {path}: {page!r}"
        return match.group(1)

    def post(self, path, data, csrf_from=None, **kwargs) -> Answer:
        data = dict(data)
        if csrf_from is not None:
            data["csrf_token"] = self.csrf(csrf_from)
        return self.request("POST", path, data=data, **kwargs)

    def login(self, user, password, expect=302) -> Answer:
        answer = self.post("/login", {"username": user, "password": password, "next": "/"}, csrf_from="/login")
        assert answer.status == expect, answer
        return answer

    def status(self) -> dict:
        answer = self.get("/api/status", headers={"Accept": "application/json"})
        assert answer.status == 200, answer
        return json.loads(answer.body)


@pytest.fixture(scope="session")
def chromium():
    try:
        from playwright import sync_api
    except ImportError:
        requirement_missing("playwright is not installed (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):
        requirement_missing(f"no chromium at {CHROMIUM} (set METALAB_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, artifacts, request):
    """A fresh browser context (no cookies) and page; a screenshot of its last state is kept after the test."""
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    pg = context.new_page()
    yield pg
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        pg.screenshot(path=str(artifacts / f"{name}-final.png"), full_page=True)
    finally:
        context.close()


def run_in_new_notebook(lab, code, expected, timeout=180):
    """From JupyterLab's launcher: a new Python notebook, ``code`` in its first cell, run until ``expected`` shows.

    A cell run before the kernel's websocket is really up is not sent anywhere (on this slow machine that happens
    even after the kernel reads idle), so the cell is run again in place (Ctrl+Enter) until its output appears.
    """
    lab.click('.jp-LauncherCard[data-category="Notebook"]')
    lab.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    cell = lab.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
    cell.click()
    lab.keyboard.type(code)
    output = lab.locator(".jp-NotebookPanel .jp-OutputArea-output").first
    deadline = time.monotonic() + timeout
    while True:
        cell.click()
        lab.keyboard.press("Control+Enter")
        try:
            output.wait_for(timeout=20_000)
            wait_for(lambda: output.inner_text().strip() == expected, 30, f"the output {expected!r} of {code!r}")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
