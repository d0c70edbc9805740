"""The channel between the front door and the lab hosts (docs/security.md, "Trust between lab hosts"): the lab CA
stays on the front door; a lab host's internal listener answers the front door's certificate only (no certificate,
another CA's, another lab host's: refused), its firewall lets only the front door reach it; the front door carries a
user's requests to her home host, and its broker asks her home host's adapter for her runtime."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import pytest
from conftest import DOOR, INTERNAL_LOG, LAB1, LAB2, Lab
from playbook_output import failures, recap

PORT = 8443
OWN = ["--cert", "/etc/metalab/tls/lab-host.crt", "--key", "/etc/metalab/tls/lab-host.key"]
# ml-lab1's lab certificate and key, copied to ml-lab2 (the firewall drops ml-lab1's own connections to port 8443).
LAB1_CERT = ["--cert", "/tmp/lab1.crt", "--key", "/tmp/lab1.key"]


@pytest.fixture(scope="module")
def lab1_cert(lab: Lab) -> list[str]:
    for suffix in ("crt", "key"):
        data = base64.b64encode(lab.sh(LAB1, f"cat /etc/metalab/tls/lab-host.{suffix}").encode()).decode()
        lab.sh(LAB2, f"install -m 0600 /dev/null /tmp/lab1.{suffix} && echo {data} | base64 -d > /tmp/lab1.{suffix}")
    return LAB1_CERT


def test_the_lab_ca_key_stays_on_the_front_door(lab: Lab) -> None:
    assert lab.sh(DOOR, "stat -c '%a %U' /etc/metalab/ca /etc/metalab/ca/lab-ca.key").split() == [
        "700", "root", "600", "root",
    ]  # fmt: skip
    for name in (LAB1, LAB2):
        assert lab.run(name, "test -e /etc/metalab/ca").rc == 1, name
        assert lab.sh(name, "stat -c '%a %U' /etc/metalab/tls/lab-host.key").split() == ["600", "root"]


def test_the_internal_listener_answers_only_the_front_doors_certificate(lab: Lab, lab1_cert: list[str]) -> None:
    address = lab.records[LAB2]["lab_address"]
    url = f"https://{address}:{PORT}/user/bob/api/status"
    other_ca = (
        "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
        f" -subj '/O=metalab lab/CN={DOOR}' -keyout other.key -out other.crt 2>/dev/null"
    )
    lab.sh(LAB2, other_ca)
    # No client certificate, another CA's with the front door's name: refused by nginx before any location. Another
    # lab host's certificate from the lab CA (ml-lab1's), and ml-lab2's own: not a front door's (403).
    assert lab.curl(LAB2, "-k", url) == "400"
    assert lab.curl(LAB2, "-k", "--cert", "/tmp/other.crt", "--key", "/tmp/other.key", url) == "400"
    assert lab.curl(LAB2, "-k", *lab1_cert, url) == "403"
    assert lab.curl(LAB2, "-k", *OWN, url) == "403"
    # The front door's certificate, ml-lab2's checked against the lab CA under its name: bob's location answers, with
    # the page that says his runtime is not running (runtimes start in test_3_browser.py).
    verified = ["--cacert", "/etc/metalab/tls/lab-ca.crt", "--resolve", f"{LAB2}:{PORT}:{address}"]
    assert lab.curl(DOOR, *verified, *OWN, f"https://{LAB2}:{PORT}/user/bob/api/status") == "503"


def test_only_the_front_door_reaches_a_lab_hosts_internal_port(lab: Lab) -> None:
    home = lab.records[LAB2]
    # The controller's address: the firewall drops it (curl times out; nothing answers).
    outside = subprocess.run(
        ["curl", "-sk", "-m", "3", "-o", "/dev/null", f"https://{home['ansible_host']}:{PORT}/"], check=False
    )
    assert outside.returncode == 28, outside
    # Another lab host: dropped too (curl's 000 after its timeout), and ml-lab2 has no public listener.
    assert lab.curl(LAB1, "-k", f"https://{home['lab_address']}:{PORT}/") == "000"
    assert lab.curl(DOOR, "-k", f"https://{home['lab_address']}/") == "000"
    # The front door connects (a TLS answer: the 400 of a request without its certificate).
    assert lab.curl(DOOR, "-k", f"https://{home['lab_address']}:{PORT}/") == "400"


def test_the_one_address_carries_a_users_requests_to_her_home_host_only(lab: Lab) -> None:
    def through_door(user: str, marker: str, token: bool = True) -> None:
        header = ["-H", "Authorization: token x"] if token else []
        subprocess.run(
            ["curl", "-sk", "-m", "10", "-o", "/dev/null", *header, f"{lab.base_url}/user/{user}/api/status?{marker}"],
            check=False,
        )

    def logged(name: str, marker: str) -> int:
        return int(lab.run(name, f"grep -cF {marker} {INTERNAL_LOG}").stdout.strip() or 0)

    # A token API request (JupyterLab judges the token) for bob travels to ml-lab2, from the front door's address.
    marker = uuid.uuid4().hex
    through_door("bob", marker)
    line = lab.sh(LAB2, f"grep -F {marker} {INTERNAL_LOG}")
    assert line.startswith(lab.records[DOOR]["lab_address"] + " ") and "/user/bob/" in line, line
    assert logged(LAB1, marker) == 0
    # Without a portal session or a token nothing leaves the front door; carol's requests never leave it either.
    alone, carol = uuid.uuid4().hex, uuid.uuid4().hex
    through_door("bob", alone, token=False)
    through_door("carol", carol)
    assert [logged(name, m) for name in (LAB1, LAB2) for m in (alone, carol)] == [0, 0, 0, 0]


# Log in at the front door's broker as the portal does and ask for the user's status; prints the JSON answer.
ASK = """/usr/bin/python3 -I -c '
import json, sys
sys.path.insert(0, "/usr/local/lib/metalab")
from metalab.brokerapi.client import BrokerClient, BrokerError
client = BrokerClient("/run/metalab/broker.sock", timeout=30)
try:
    ticket = client.call("login", user=sys.argv[1], password=sys.argv[2])["ticket"]
    print(json.dumps({"ok": True, "result": client.call(sys.argv[3], ticket=ticket)}))
except BrokerError as exc:
    print(json.dumps({"ok": False, "code": exc.code, "message": str(exc)}))
'"""


def ask(lab: Lab, user: str, password: str, op: str = "status") -> dict:
    return json.loads(lab.sh(DOOR, f"{ASK} {user} {password} {op}"))


def test_the_front_doors_broker_asks_the_home_host_and_only_it_answers(lab: Lab, passwords, lab1_cert) -> None:
    for user, home in (("bob", LAB2), ("alice", LAB1), ("carol", DOOR)):
        answer = ask(lab, user, passwords[user])
        assert answer["ok"] and answer["result"]["user"] == user and answer["result"]["host"] == home, answer
    address = lab.records[LAB2]["lab_address"]
    url = f"https://{address}:{PORT}/_metalab/broker"
    body = json.dumps({"op": "status", "user": "bob"})
    post = ["-X", "POST", "-d", body, url]
    # ml-lab1's lab certificate is no front door's: refused before the adapter.
    assert lab.curl(LAB2, "-k", *lab1_cert, *post) == "403"
    # The front door's: answered; an operation the adapter does not serve is refused by name.
    curl = f"curl -s -m 5 --cacert /etc/metalab/tls/lab-ca.crt {' '.join(OWN)} -X POST"
    answer = json.loads(lab.sh(DOOR, f"{curl} -d '{body}' {url}"))
    assert answer["ok"] and answer["result"]["host"] == LAB2
    login = json.dumps({"op": "login", "user": "bob", "password": "x"})
    refused = json.loads(lab.sh(DOOR, f"{curl} -d '{login}' {url}"))
    assert refused["error"]["code"] == "bad-request" and "'login' is not served" in refused["error"]["message"]


def test_a_certificate_near_its_end_is_renewed_and_the_channel_keeps_working(lab: Lab, tmp_path) -> None:
    serial = "openssl x509 -in /etc/metalab/tls/lab-host.crt -noout -serial"
    before = lab.sh(LAB2, serial)
    # ml-lab2's certificate (365 days) is inside a 400-day renewal window: the converge renews it, signed on ml-door.
    soon = tmp_path / "renew.yml"
    soon.write_text(json.dumps({"all": {"hosts": {LAB2: {"frontdoor_channel_renew_days": 400}}}}))
    renew = lab.playbook(lab.inventory, soon, tags="base,frontdoor", limit=f"{DOOR},{LAB2}")
    assert renew.returncode == 0, failures(renew)
    totals = recap(renew.stdout)
    assert totals[LAB2]["changed"] > 0 and totals[DOOR]["changed"] == 0, totals
    assert lab.sh(LAB2, serial) != before
    marker = uuid.uuid4().hex
    subprocess.run(
        ["curl", "-sk", "-m", "10", "-o", "/dev/null", "-H", "Authorization: token x",
         f"{lab.base_url}/user/bob/api/status?{marker}"],
        check=False,
    )  # fmt: skip
    assert marker in lab.sh(LAB2, f"grep -F {marker} {INTERNAL_LOG}")
