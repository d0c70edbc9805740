"""The front door's nginx configuration and the host firewall as rendered for a single-host and a two-host lab
(ansible's Templar on the roles' own defaults and vars): a single-host lab gets exactly the configuration the default
scenario's host has (tests/integration/default/rendered), a two-host lab the channel of docs/security.md ("Trust
between lab hosts"). nginx -t of these files runs on the sandboxes (the template tasks' validate:,
tests/sandbox/test_channel.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[3]
ROLES = REPO / "roles"
RENDERED = REPO / "tests/integration/default/rendered"

USERS = [
    {"name": "alice", "state": "present"},
    {"name": "bob", "state": "present"},
    {"name": "carol", "state": "absent"},
]
TWO_HOSTS = {
    "groups": {"all": ["fd", "h2"], "lab_frontdoor": ["fd"], "ungrouped": []},
    "hostvars": {"fd": {"ansible_host": "192.0.2.10", "lab_address": "10.9.0.1"}, "h2": {"ansible_host": "h2.lab"}},
    "lab_users_resolved": USERS,
    "lab_users_lab": [
        {"name": "alice", "state": "present", "host": "fd"},
        {"name": "bob", "state": "present", "host": "h2"},
        {"name": "carol", "state": "absent", "host": "h2"},
    ],
}


def _variables(role: str, **extra: object) -> dict:
    loader = DataLoader()
    variables: dict = {}
    for path in (
        ROLES / "common/defaults/main.yml",
        ROLES / role / "defaults/main.yml",
        ROLES / role / "vars/main.yml",
        ROLES / role / "vars/Debian.yml",
    ):
        variables.update(loader.load_from_file(str(path), trusted_as_template=True))
    variables.update({"ansible_managed": "Ansible managed", "inventory_hostname": "fd"}, **extra)
    return variables


def render(role: str, template: str, **extra: object) -> str:
    variables = _variables(role, **extra)
    text = (ROLES / role / "templates" / template).read_text()
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(text))


def value(role: str, expression: str, **extra: object) -> object:
    variables = _variables(role, **extra)
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


def nginx(**extra: object) -> str:
    extra.setdefault("__frontdoor_ipv6", True)
    return render("frontdoor", "etc/nginx/conf.d/metalab.conf.j2", **extra)


def internal(**extra: object) -> str:
    extra.setdefault("__frontdoor_ipv6", False)
    return render("frontdoor", "etc/nginx/conf.d/metalab-internal.conf.j2", **extra)


def test_a_single_host_lab_gets_the_configuration_of_today():
    expected = (RENDERED / "etc/nginx/conf.d/metalab.conf").read_text()
    single = {"groups": {"all": ["lab1"], "ungrouped": ["lab1"]}, "inventory_hostname": "lab1"}
    assert nginx(lab_users_resolved=USERS, **single) == expected
    # With the fact of roles/common (every user homed on the one host): the same file.
    homed = [dict(u, host="lab1") for u in USERS]
    assert nginx(lab_users_resolved=USERS, lab_users_lab=homed, **single) == expected
    assert value("frontdoor", "{{ __frontdoor_channel }}", lab_users_resolved=USERS, **single) is False
    assert value("frontdoor", "{{ __frontdoor_internal }}", lab_users_resolved=USERS, **single) is False
    assert value("frontdoor", "{{ __frontdoor_public }}", lab_users_resolved=USERS, **single) is True


def test_the_front_door_proxies_a_user_homed_elsewhere_over_the_channel():
    text = nginx(**TWO_HOSTS)
    alice = text[text.index("location /user/alice/") :]
    alice = alice[: alice.index("\n    }\n")]
    bob = text[text.index("location /user/bob/") :]
    bob = bob[: bob.index("\n    }\n")]
    assert "location /user/carol/" not in text
    # alice is homed on the front door: her socket, as ever.
    assert "proxy_pass http://unix:/run/metalab/sockets/alice/jupyter.sock;" in alice and "proxy_ssl" not in alice
    # bob: h2's internal listener (its inventory name resolves nowhere: its ansible_host), h2's certificate verified
    # against the lab CA under the name h2, the front door's own certificate shown.
    assert "upstream metalab_home_h2 {\n    server h2.lab:8443;\n    keepalive 16;\n}" in text
    for line in (
        "proxy_pass https://metalab_home_h2;",
        "proxy_ssl_certificate /etc/metalab/tls/lab-host.crt;",
        "proxy_ssl_certificate_key /etc/metalab/tls/lab-host.key;",
        "proxy_ssl_trusted_certificate /etc/metalab/tls/lab-ca.crt;",
        "proxy_ssl_verify on;",
        "proxy_ssl_name h2;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $metalab_home_connection;",
    ):
        assert line in bob, line
    # The portal's session check, the token and the Origin refusal stay on the front door for remote users too.
    for line in ("auth_request /auth/check;", "sub_filter $metalab_lab_token", "if ($metalab_refuse_origin)"):
        assert line in bob and line in alice, line


def test_the_home_host_listens_internally_for_the_front_door_only():
    h2 = dict(TWO_HOSTS, inventory_hostname="h2")
    assert value("frontdoor", "{{ __frontdoor_public }}", **h2) is False
    assert value("frontdoor", "{{ __frontdoor_internal }}", **h2) is True
    assert value("frontdoor", "{{ __frontdoor_host_san }}", **h2) == "DNS:h2,DNS:h2.lab"
    text = internal(**h2)
    assert "listen 8443 ssl;" in text
    assert "ssl_verify_client on;" in text and "ssl_client_certificate /etc/metalab/tls/lab-ca.crt;" in text
    # Only the front door's subject is served; h2's own certificate (same CA) is not.
    refused = text[text.index("map $ssl_client_s_dn") :]
    refused = refused[: refused.index("}")]
    assert '"CN=fd,O=metalab lab" 0;' in refused and "CN=h2" not in refused and "default 1;" in refused
    assert "if ($metalab_internal_refused) {\n        return 403;" in text
    # bob is homed here; alice is not, carol is gone.
    assert "location /user/bob/ {\n        proxy_pass http://unix:/run/metalab/sockets/bob/jupyter.sock;" in text
    assert "/user/alice/" not in text and "/user/carol/" not in text


def test_the_front_door_has_no_internal_listener_and_an_ip_subject_name():
    assert value("frontdoor", "{{ __frontdoor_internal }}", **TWO_HOSTS) is False
    assert value("frontdoor", "{{ __frontdoor_public }}", **TWO_HOSTS) is True
    assert value("frontdoor", "{{ __frontdoor_ca_host }}", **TWO_HOSTS) == "fd"
    assert value("frontdoor", "{{ __frontdoor_host_san }}", **TWO_HOSTS) == "DNS:fd,IP:10.9.0.1"


def test_a_multi_host_lab_without_a_front_door_has_none():
    no_group = dict(TWO_HOSTS, groups={"all": ["fd", "h2"], "ungrouped": ["fd", "h2"]})
    assert value("frontdoor", "{{ __frontdoor_hosts }}", **no_group) == []  # validate.yml refuses it by name


def firewall(host: str, **extra: object) -> str:
    variables = dict(TWO_HOSTS, inventory_hostname=host, __base_sshd_probe={"stdout_lines": ["port 22"]}, **extra)
    return render("base", "etc/metalab/firewall.nft.j2", **variables)


def nft_check(text: str, tmp_path: Path) -> None:
    if shutil.which("nft") is None or os.geteuid() != 0:
        # make test installs nftables and runs as root: there a missing requirement is a failure, never a skip
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":
            pytest.fail("nft -c needs nft (Debian package nftables) and root")
        pytest.skip("nft -c needs nft and root")
    rules = tmp_path / "firewall.nft"
    rules.write_text(text)
    done = subprocess.run(["nft", "-c", "-f", str(rules)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_home_hosts_firewall_admits_the_front_door_to_the_internal_port_only(tmp_path):
    h2 = firewall("h2")
    nft_check(h2, tmp_path)
    assert "ip saddr { 10.9.0.1 } tcp dport 8443 accept" in h2
    assert "tcp dport { 80, 443 }" not in h2  # no public address on a host that is no front door
    fd = firewall("fd")
    assert "tcp dport { 80, 443 } accept" in fd and "8443" not in fd
    single = render(
        "base", "etc/metalab/firewall.nft.j2", inventory_hostname="lab1", groups={"all": ["lab1"]},
        __base_sshd_probe={"stdout_lines": ["port 22"]},
    )  # fmt: skip
    assert "tcp dport { 80, 443 } accept" in single and "8443" not in single


def test_a_single_host_labs_firewall_is_the_one_of_today():
    expected = (RENDERED / "etc/metalab/firewall.nft").read_text()
    text = render(
        "base", "etc/metalab/firewall.nft.j2", inventory_hostname="lab1", groups={"all": ["lab1"]},
        __base_sshd_probe={"stdout_lines": ["port 22"]}, __base_firewall_unit="metalab-firewall.service",
    )  # fmt: skip
    assert text == expected
