"""guard.json (roles/session_limits) rendered with ansible's Templar: runtime.selinux appears only where
lab_selinux_enabled; without it the file is what it was (Debian 12's rendered guard.json stays byte for byte)."""

from __future__ import annotations

import json
from pathlib import Path

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLES = Path(__file__).resolve().parents[3] / "roles"


def render(selinux: bool) -> str:
    loader = DataLoader()
    variables = {}
    for path in (
        ROLES / "common/defaults/main.yml",
        ROLES / "session_limits/defaults/main.yml",
        ROLES / "session_limits/vars/main.yml",
    ):
        variables.update(loader.load_from_file(str(path), trusted_as_template=True))
    variables.update(
        ansible_managed="managed by metalab",
        inventory_hostname="lab1",
        ansible_facts={
            "distribution": "Amazon",
            "getent_passwd": {"lab-alice": ["x", "2001", "2001", "", "", "", ""]},
            "getent_group": {},
        },
        lab_users_resolved=[
            {
                "name": "alice",
                "login": "lab-alice",
                "home": "/srv/metalab/homes/alice",
                "gpu": False,
                "state": "present",
            },
        ],
        lab_proxy_env={},
        runtime_image_ref="localhost/metalab-runtime:1",
        lab_selinux_enabled=selinux,
    )
    return Templar(loader=loader, variables=variables).template(
        trust_as_template((ROLES / "session_limits/templates/etc/metalab/guard.json.j2").read_text())
    )


def test_selinux_only_where_enabled():
    without, with_selinux = render(False), render(True)
    assert "selinux" not in without
    plain, labelled = json.loads(without), json.loads(with_selinux)
    assert labelled["runtime"].pop("selinux") is True
    assert labelled == plain
