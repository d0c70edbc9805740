"""Ansible inventory for sandboxes (pure: records in, YAML out)."""

from __future__ import annotations

import glob
from typing import Any

import yaml

HOST_KEYS = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file")


def extra_ca_certificates() -> list[str]:
    """The controller's own extra CAs (a TLS-inspecting proxy's): lab hosts must trust them too."""
    return sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True))


def build(records: list[dict[str, Any]], ca_certificates: list[str]) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {"sandbox_nspawn": {"hosts": {}}, "sandbox_vm": {"hosts": {}}}
    for record in records:
        host = {key: record[key] for key in HOST_KEYS}
        host["ansible_ssh_common_args"] = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        if record.get("lab_http_proxy"):
            host["lab_http_proxy"] = record["lab_http_proxy"]
        if record.get("lab_address"):
            host["lab_address"] = record["lab_address"]  # on the lab network that nspawn sandboxes share
        host["metalab_sandbox_kind"] = record["kind"]
        if record.get("https_port"):
            host["metalab_sandbox_https_port"] = record["https_port"]
        hosts[record["name"]] = host
        groups[f"sandbox_{record['kind']}"]["hosts"][record["name"]] = None
    return {
        "all": {
            "vars": {
                "ansible_become": True,
                "ansible_python_interpreter": "/usr/bin/python3",
                "lab_extra_ca_certificates": ca_certificates,
            },
            "hosts": hosts,
            "children": {name: group for name, group in groups.items() if group["hosts"]},
        }
    }


def render(records: list[dict[str, Any]], ca_certificates: list[str]) -> str:
    return yaml.safe_dump(build(records, ca_certificates), sort_keys=False, default_flow_style=False)
