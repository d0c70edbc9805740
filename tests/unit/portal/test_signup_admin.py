"""The admin side of sign-up (issue 19): `labctl users requests|approve|deny|reset` against a real broker's files,
the mailer against a real SMTP server on loopback (aiosmtpd), and the whole way in the portal: request -> approve ->
the link arrives by mail -> she enrolls and logs in.

labctl's host calls (playbooks/labctl/signup.yml) are replaced by metalab-broker's own CLI run here with the stdin
the playbook gives it (lab_smtp, base_url); provisioning by adding her to the guard config as the site run does."""

from __future__ import annotations

import contextlib
import email
import io
import json
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from metalab.host.broker import cli as broker_cli
from metalab.host.broker import mail
from metalab.labctl import layout
from metalab.labctl import signup as labctl_signup
from metalab.labctl.cli import cli
from metalab.labctl.users import BrokerResult

from .conftest import Browser, LabEnv

INVENTORY = Path(__file__).parents[1] / "labctl" / "fixtures" / "inventory"
LINK = re.compile(r"https://lab\.test/enroll/[A-Za-z0-9_-]+")


class Inbox:
    def __init__(self) -> None:
        self.messages: List[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, Dict[str, Any]]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, {"host": "127.0.0.1", "port": port, "from": "lab@example.org", "starttls": False}
    finally:
        controller.stop()


class Lab:
    """The lab host as labctl sees it: metalab-broker's CLI on the test broker's files, lab_smtp on its stdin."""

    def __init__(self, env: LabEnv, tmp: Path, relay: Optional[Dict[str, Any]]) -> None:
        self.env = env
        self.relay = relay
        self.calls: List[List[str]] = []
        self.provisioned: List[str] = []
        self.config = tmp / "broker.json"
        self.config.write_text(json.dumps(env.broker_data))
        shutil.copytree(INVENTORY, tmp / "inventory")
        self.inventory = tmp / "inventory" / "hosts.yml"

    def host_call(self, args: List[str], *, inventory: str, host: Optional[str]) -> BrokerResult:
        self.calls.append(list(args))
        stdin = json.dumps({"smtp": self.relay, "base_url": "https://lab.test", "title": "metalab"})
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = broker_cli.main(["--config", str(self.config), *args])
        finally:
            sys.stdin = old
        return BrokerResult("lab1", rc, out.getvalue(), err.getvalue())

    def provision(self, inventory: Path, plain: bool) -> int:
        """What the site run does for a new lab user, as far as the broker sees it: the guard knows her."""
        text = inventory.read_text()
        for name in re.findall(r"name: (\w+)", text):
            if name not in self.env.guard["users"]:
                home = self.env.tmp / "home" / name
                home.mkdir(parents=True)
                self.env.guard["users"][name] = {"uid": 3100, "gid": 3100, "home": str(home), "gpu": False}
                self.provisioned.append(name)
        self.env.write_guard()
        return 0

    def labctl(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, [*args, "-i", str(self.inventory)])
        return result.exit_code, result.output


def make_lab(env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay: Optional[Dict[str, Any]]) -> Lab:
    lab = Lab(env, tmp_path, relay)
    monkeypatch.setattr(labctl_signup, "HOST_CALL", lab.host_call)
    monkeypatch.setattr(labctl_signup, "provision", lab.provision)
    # Placement reads the homes volumes' sizes on the hosts: here every host has 1 TiB.
    monkeypatch.setattr(layout, "SIZES", lambda inventory, hosts: {h: 1024**4 for h in hosts})
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    return lab


def request_access(env: LabEnv, name: str, address: str) -> None:
    page = env.browser().post("/signup", {"name": name, "email": address, "reason": "MSc thesis"}, csrf_from="/signup")
    assert page.status_code == 200, page.get_data(as_text=True)


def test_request_approve_mail_enroll_login(
    env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: tuple[Inbox, Dict[str, Any]]
) -> None:
    inbox, relay = smtp
    lab = make_lab(env, tmp_path, monkeypatch, relay)
    request_access(env, "dora", "dora@example.org")
    code, out = lab.labctl("users", "requests", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["name"], r["email"], r["status"]) for r in rows] == [("dora", "dora@example.org", "pending")]

    before = lab.inventory.read_text()
    code, out = lab.labctl("users", "approve", "dora", "--quota", "12G")
    assert code == 0, out
    assert "her enrollment link went to dora@example.org" in out
    after = lab.inventory.read_text()
    assert after.startswith(before.split("    # Session limits")[0])  # comments and entries kept
    # A lab of three hosts: she is placed on the one with the most quota headroom (lab2 holds no quota yet).
    assert "{name: dora, quota: 12G, gpu: false, host: lab2.example.org, email: dora@example.org}" in after
    assert "placed dora -> lab2.example.org: the most quota headroom" in out, out
    assert lab.provisioned == ["dora"]
    # The mail: to her, with a link to this lab's portal.
    [(rcpt, msg)] = inbox.messages
    assert rcpt == ["dora@example.org"] and msg["From"] == "lab@example.org"
    link = LINK.search(msg.get_payload())
    assert link, msg.get_payload()
    # She enrolls with it and sees her lab; the request is marked approved.
    browser = Browser(env.app().test_client())
    path = link.group(0).removeprefix("https://lab.test")
    form = browser.post(path, {"password": "dora-password-1", "confirm": "dora-password-1"}, csrf_from=path)
    assert form.status_code == 302
    assert "My lab" in browser.get("/").get_data(as_text=True)
    assert env.browser().login("dora", "dora-password-1").status_code == 302
    code, out = lab.labctl("users", "requests", "--all", "--json")
    assert [r["status"] for r in json.loads(out)] == ["approved"]


def test_without_a_relay_approve_prints_the_link(env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = make_lab(env, tmp_path, monkeypatch, None)
    request_access(env, "emil", "emil@example.org")
    code, out = lab.labctl("users", "approve", "emil", "--gpu")
    assert code == 0, out
    assert LINK.search(out) and "give her this enrollment link" in out
    assert "host: gpu1.example.org, email: emil@example.org}" in lab.inventory.read_text()  # the one GPU host


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("zed", [], "no pending sign-up request for 'zed'"),
        ("dora", ["--quota", "12GG"], "invalid quota"),
        ("bob", [], "duplicate name"),  # taken in the inventory (a request made before she was added)
        ("dora", ["--home", "nosuch.example.org"], "is not a lab host"),
        ("dora", ["--gpu", "--home", "lab1.example.org"], "is not in the group gpu_hosts"),
    ],
)
def test_bad_approvals_change_nothing(
    env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, args: List[str], message: str
) -> None:
    lab = make_lab(env, tmp_path, monkeypatch, None)
    request_access(env, "dora", "dora@example.org")
    if name == "bob":  # a pending request whose name the inventory has meanwhile
        del env.guard["users"]["bob"]
        env.write_guard()
        Path(env.broker_data["passwords"]).unlink()
        env.start_broker()  # passwords again; bob not among the guard's users
        json_path = Path(env.broker_data["state"]).parent / "requests.json"
        data = json.loads(json_path.read_text())
        data["requests"]["bob"] = dict(data["requests"]["dora"], name="bob", email="bob@example.org")
        json_path.write_text(json.dumps(data))
    before = lab.inventory.read_bytes()
    requests_before = (Path(env.broker_data["state"]).parent / "requests.json").read_bytes()
    code, out = lab.labctl("users", "approve", name, *args)
    assert code != 0 and message in out, out
    assert lab.inventory.read_bytes() == before
    assert (Path(env.broker_data["state"]).parent / "requests.json").read_bytes() == requests_before
    assert lab.provisioned == []
    assert "signup-approve" not in [c[0] for c in lab.calls]


def test_deny_tells_her_by_mail(
    env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: tuple[Inbox, Dict[str, Any]]
) -> None:
    inbox, relay = smtp
    lab = make_lab(env, tmp_path, monkeypatch, relay)
    request_access(env, "dora", "dora@example.org")
    before = lab.inventory.read_bytes()
    code, out = lab.labctl("users", "deny", "dora", "--reason", "not a member of the group")
    assert code == 0 and "mailed dora@example.org" in out, out
    [(rcpt, msg)] = inbox.messages
    assert rcpt == ["dora@example.org"] and "not a member of the group" in msg.get_payload()
    assert lab.inventory.read_bytes() == before
    again, out = lab.labctl("users", "deny", "dora")
    assert again != 0 and "no pending sign-up request for 'dora' (it is denied)" in out


def test_reset_ends_sessions_and_the_old_password(
    env: LabEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp: tuple[Inbox, Dict[str, Any]]
) -> None:
    inbox, relay = smtp
    lab = make_lab(env, tmp_path, monkeypatch, relay)
    browser = env.browser()
    browser.login("bob")
    assert browser.get("/").status_code == 200
    code, out = lab.labctl("users", "reset", "bob")
    assert code == 0, out
    assert LINK.search(out)  # bob has no e-mail in the inventory: the link is printed
    assert inbox.messages == []
    assert browser.get("/").status_code == 302  # his session ended
    assert env.browser().login("bob").status_code == 401  # the old password no longer works
    path = LINK.search(out).group(0).removeprefix("https://lab.test")  # type: ignore[union-attr]
    fresh = env.browser()
    assert (
        fresh.post(path, {"password": "bob-new-pass-9", "confirm": "bob-new-pass-9"}, csrf_from=path).status_code == 302
    )
    assert env.browser().login("bob", "bob-new-pass-9").status_code == 302
    unknown, out = lab.labctl("users", "reset", "nobody")
    assert unknown != 0 and "no lab user named 'nobody'" in out


# -- the mailer against a real SMTP server ---------------------------------------------------------------------


def test_mailer_delivers_through_a_real_relay(smtp: tuple[Inbox, Dict[str, Any]]) -> None:
    inbox, relay = smtp
    mail.send(mail.parse_smtp(relay), "dora@example.org", "metalab: hello", "line one\nline two\n")
    [(rcpt, msg)] = inbox.messages
    assert rcpt == ["dora@example.org"]
    assert msg["Subject"] == "metalab: hello" and msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_payload().splitlines() == ["line one", "line two"]


def test_mailer_failures_are_clear(smtp: tuple[Inbox, Dict[str, Any]]) -> None:
    _, relay = smtp
    closed = dict(relay, port=free_port())
    with pytest.raises(mail.MailError, match=r"through 127\.0\.0\.1:\d+ failed"):
        mail.send(mail.parse_smtp(closed), "dora@example.org", "s", "b")
    with pytest.raises(mail.MailError, match="STARTTLS"):  # a relay that cannot STARTTLS is not used in clear
        mail.send(mail.parse_smtp(dict(relay, starttls=True)), "dora@example.org", "s", "b")
    with pytest.raises(mail.MailError, match="not a valid address"):
        mail.send(mail.parse_smtp(relay), "dora@example.org\nBcc: x@evil.example", "s", "b")
    for bad, message in (
        ({"port": 25, "from": "lab@example.org"}, "lab_smtp.host"),
        (dict(relay, port="smtp"), "lab_smtp.port"),
        (dict(relay, **{"from": "lab"}), "lab_smtp.from"),
        (dict(relay, username="lab"), "both username and password"),
        (dict(relay, relay="x"), "unknown key"),
    ):
        with pytest.raises(mail.MailError, match=message):
            mail.parse_smtp(bad)
