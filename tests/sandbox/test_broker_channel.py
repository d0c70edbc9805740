"""The portal's broker channel of a multi-host lab on two nspawn sandboxes: rl1 is the front door (group
lab_frontdoor), rl2 a lab host; alice is homed on rl1, bob on rl2 (docs/security.md, "Trust between lab hosts").

The front door's broker (the one the portal asks) holds every lab user's password, and sends bob's runtime
operations to rl2's broker adapter through rl2's internal listener, with rl1's lab certificate. Converged: base
(firewall), lab_users (accounts and homes), frontdoor (lab CA, certificates, internal listener), session_limits (the
guard's config the brokers read) and portal (the brokers); no container engine or runtime image: status, the token
and the refusals are what is asserted, not a running JupyterLab.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import failures, labctl, playbook, recap, ssh, up

FRONT, HOME = "rl1", "rl2"
TAGS = "base,lab_users,frontdoor,session_limits,portal"
PORT = 8443
PASSWORDS = {"alice": "alice-channel-1", "bob": "bob-channel-22"}
# Log in at the front door's broker and ask for the user's status, as the portal does; prints the JSON answer.
ASK = """sudo /usr/bin/python3 -I -c '
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


@pytest.fixture(scope="module")
def lab(state_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broker-channel")
    try:
        records = {name: up(name) for name in (FRONT, HOME)}
        sandboxes = tmp / "sandboxes.yml"
        sandboxes.write_text(labctl("inventory", FRONT, HOME).stdout)
        users = [{"name": "alice", "quota": "1G", "host": FRONT}, {"name": "bob", "quota": "1G", "host": HOME}]
        settings = {"lab_homes_device": "none", "lab_quota_required": False, "lab_users": users}
        inventory = tmp / "lab.yml"
        layout = {"all": {"vars": settings, "children": {"lab_frontdoor": {"hosts": {FRONT: None}}}}}
        inventory.write_text(json.dumps(layout))
        converge = playbook("site.yml", sandboxes, inventory, tags=TAGS)
        assert converge.returncode == 0, failures(converge)
        front = records[FRONT]
        for user, password in PASSWORDS.items():  # one password database: both at the front door
            done = ssh(front, f"echo {password} | sudo metalab-broker passwd {user} --stdin")
            assert done.returncode == 0, done.stderr + done.stdout
        yield {"records": records, "inventories": (sandboxes, inventory)}
    finally:
        labctl("down", FRONT, HOME, check=False)


def test_a_rerun_changes_nothing(lab):
    rerun = playbook("site.yml", *lab["inventories"], tags=TAGS)
    assert rerun.returncode == 0, failures(rerun)
    totals = recap(rerun.stdout)
    assert totals[FRONT]["changed"] == 0 and totals[HOME]["changed"] == 0, totals


def _ask(lab, user: str, op: str = "status") -> dict:
    run = ssh(lab["records"][FRONT], f"{ASK} {user} {PASSWORDS[user]} {op}")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_front_doors_broker_gets_bobs_status_from_his_home_host(lab):
    bob = _ask(lab, "bob")
    assert bob["ok"], bob
    assert bob["result"]["user"] == "bob" and bob["result"]["host"] == HOME and bob["result"]["lab_user"]
    assert _ask(lab, "bob", "token") == {"ok": True, "result": {"user": "bob", "token": None}}
    alice = _ask(lab, "alice")
    assert alice["ok"] and alice["result"]["host"] == FRONT
    # rl2 served it: its internal listener logged the front door's request to the adapter.
    log = ssh(lab["records"][HOME], "sudo grep -c 'POST /_metalab/broker' /var/log/nginx/metalab-internal.log")
    assert int(log.stdout.strip() or 0) >= 2


def test_rl2s_adapter_answers_only_the_front_doors_certificate(lab):
    home = lab["records"][HOME]
    url = f"https://{home['lab_address']}:{PORT}/_metalab/broker"
    body = '{"op": "status", "user": "bob"}'
    curl = f"sudo curl -s -o /dev/null -m 5 -w '%{{http_code}}' -k -X POST -d '{body}'"
    # Without a client certificate: nginx refuses the request (400: no required SSL certificate was sent).
    assert ssh(home, f"{curl} {url}").stdout.strip() == "400"
    # With rl2's own lab certificate (from the lab CA, not the front door's subject): 403.
    own = "--cert /etc/metalab/tls/lab-host.crt --key /etc/metalab/tls/lab-host.key"
    assert ssh(home, f"{curl} {own} {url}").stdout.strip() == "403"
    # The front door's certificate gets an answer; a login through the adapter is refused by it, by name.
    front = lab["records"][FRONT]
    ok = f"sudo curl -s -m 5 --cacert /etc/metalab/tls/lab-ca.crt {own} -X POST"
    answer = json.loads(ssh(front, f"{ok} -d '{body}' {url}").stdout)
    assert answer["ok"] and answer["result"]["host"] == HOME
    login = '{"op": "login", "user": "bob", "password": "x"}'
    refused = json.loads(ssh(front, f"{ok} -d '{login}' {url}").stdout)
    assert refused["error"]["code"] == "bad-request" and "'login' is not served" in refused["error"]["message"]


def test_with_rl2_down_bob_is_told_and_alice_is_unaffected(lab):
    home = lab["records"][HOME]
    assert ssh(home, "sudo systemctl stop nginx").returncode == 0
    try:
        began = time.monotonic()
        bob = _ask(lab, "bob")
        assert not bob["ok"] and bob["code"] == "unreachable", bob
        assert f"bob's home host {HOME} is not reachable" in bob["message"]
        assert time.monotonic() - began < 30
        alice = _ask(lab, "alice")
        assert alice["ok"] and alice["result"]["host"] == FRONT
    finally:
        assert ssh(home, "sudo systemctl start nginx").returncode == 0
    assert _ask(lab, "bob")["ok"]
