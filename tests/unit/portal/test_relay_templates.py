"""broker.json and the internal nginx listener as rendered for a single-host and a two-host lab (ansible's Templar on
the roles' own defaults and vars): a single-host lab's broker.json has no channel at all, the front door's lists the
users homed elsewhere with their host and address, the other host's names its adapter for the front door, and that
host's internal listener passes exactly POST /_metalab/broker to it (docs/security.md, "Trust between lab hosts")."""

from __future__ import annotations

import json
from pathlib import Path

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from metalab.host.broker.config import parse_config

ROLES = Path(__file__).resolve().parents[3] / "roles"
RENDERED = Path(__file__).resolve().parents[3] / "tests/integration/default/rendered"
USERS = [{"name": "alice", "state": "present"}, {"name": "bob", "state": "present"}]
LAB = [
    {"name": "alice", "state": "present", "host": "fd"},
    {"name": "bob", "state": "present", "host": "h2"},
    {"name": "carol", "state": "absent", "host": "h2"},
]
TWO_HOSTS = {
    "groups": {"all": ["fd", "h2"], "lab_frontdoor": ["fd"], "ungrouped": []},
    "hostvars": {"fd": {"ansible_host": "192.0.2.10", "lab_address": "10.9.0.1"}, "h2": {"ansible_host": "h2.lab"}},
    "lab_users_lab": LAB,
}


def _render(role: str, template: str, **extra: object) -> str:
    loader = DataLoader()
    variables: dict = {}
    for path in ("common/defaults/main.yml", f"{role}/defaults/main.yml", f"{role}/vars/main.yml",
                 f"{role}/vars/Debian.yml"):  # fmt: skip
        variables.update(loader.load_from_file(str(ROLES / path), trusted_as_template=True))
    variables.update(
        {"ansible_managed": "Ansible managed", "inventory_hostname": "fd", "lab_users_resolved": USERS,
         "ansible_facts": {"distribution": "Debian"}, "lab_portal_admins": []},
        **extra,
    )  # fmt: skip
    text = (ROLES / role / "templates" / template).read_text()
    return Templar(loader=loader, variables=variables).template(trust_as_template(text))


def broker(**extra: object) -> dict:
    return json.loads(_render("portal", "etc/metalab/broker.json.j2", **extra))


def test_a_single_host_labs_broker_config_has_no_channel():
    single = broker(groups={"all": ["lab1"], "ungrouped": ["lab1"]}, inventory_hostname="lab1",
                    lab_users_lab=[dict(u, host="lab1") for u in USERS])  # fmt: skip
    assert not {"homes", "channel", "home_adapter"} & set(single)
    # The default scenario's file has the same keys (and single sign-on, which this render does not turn on).
    assert set(single) | {"oidc"} == set(json.loads((RENDERED / "etc/metalab/broker.json").read_text()))


def test_the_front_door_relays_users_homed_elsewhere():
    front = broker(**TWO_HOSTS)
    assert front["homes"] == {"bob": {"host": "h2", "address": "h2.lab"}}  # carol is absent, alice is homed here
    assert front["channel"] == {"port": 8443, "cert": "/etc/metalab/tls/lab-host.crt",
                                "key": "/etc/metalab/tls/lab-host.key", "ca": "/etc/metalab/tls/lab-ca.crt",
                                "timeout": 5}  # fmt: skip
    assert "home_adapter" not in front
    assert parse_config(dict(front, clients=[0], socket_group=None)).homes["bob"].address == "h2.lab"


def test_the_home_host_serves_the_front_door_through_its_adapter():
    home = broker(**dict(TWO_HOSTS, inventory_hostname="h2"))
    assert home["home_adapter"] == {"socket": "/run/metalab/broker-home.sock", "group": "www-data"}
    assert "homes" not in home and "channel" not in home
    listener = _render("frontdoor", "etc/nginx/conf.d/metalab-internal.conf.j2", __frontdoor_ipv6=False,
                       **dict(TWO_HOSTS, inventory_hostname="h2"))  # fmt: skip
    location = listener.split("location = /_metalab/broker {", 1)[1].split("}\n\n", 1)[0]
    assert "limit_except POST" in location and "proxy_pass http://unix:/run/metalab/broker-home.sock;" in location
    # Without a portal there is no adapter, and so no such location.
    assert "/_metalab/broker" not in _render(
        "frontdoor",
        "etc/nginx/conf.d/metalab-internal.conf.j2",
        __frontdoor_ipv6=False,
        lab_portal_enabled=False,
        **dict(TWO_HOSTS, inventory_hostname="h2"),
    )
