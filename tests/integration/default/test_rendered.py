"""What the roles render on the default scenario's host, byte for byte, against the files committed beside this test.

A restructuring of the roles (the lab users resolved once, shared plumbing, the host layout) must not change what
a lab host gets: these files are the rendered configuration of a converged host (the guard's, the broker's and the
portal's configuration, nginx, systemd units, sshd, cron, at, PAM access, sysctls, firewall and egress rules,
containers.conf, the apt proxy), captured when the layout changed. A change to one of them is deliberate: rerun with
METALAB_UPDATE_RENDERED=1 to rewrite the expected files, and review the diff like code.

The sandbox's own address and its gateway (the proxy) depend on which sandbox slot the run got; they are written as
@HOST@ and @GATEWAY@.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ok

EXPECTED = Path(__file__).resolve().parent / "rendered"
FILES = [
    "/etc/metalab/guard.json",
    "/etc/metalab/broker.json",
    "/etc/metalab/portal.json",
    "/etc/metalab/proxy.env",
    "/etc/metalab/firewall.nft",
    "/etc/metalab/egress.nft",
    "/etc/nginx/conf.d/metalab.conf",
    "/etc/systemd/system/metalab-broker.service",
    "/etc/systemd/system/metalab-portal.service",
    "/etc/systemd/system/metalab-firewall.service",
    "/etc/systemd/system/metalab-egress.service",
    "/etc/systemd/coredump.conf.d/90-metalab.conf",
    "/etc/ssh/sshd_config.d/10-metalab.conf",
    "/etc/cron.d/metalab-guard",
    "/etc/cron.deny",
    "/etc/at.deny",
    "/etc/security/access.conf",
    "/etc/security/limits.d/90-metalab.conf",
    "/etc/sysctl.d/90-metalab.conf",
    "/etc/modprobe.d/metalab.conf",
    "/etc/profile.d/metalab-umask.sh",
    "/etc/containers/containers.conf",
    "/etc/apt/apt.conf.d/80metalab-proxy",
    "/usr/local/bin/metalab-guard",
    "/usr/local/bin/metalab-broker",
]


def _normalised(host, text: str) -> str:
    variables = host.backend.get_variables() if hasattr(host.backend, "get_variables") else {}
    address = str(variables.get("ansible_host") or host.backend.host)
    gateway = address.rsplit(".", 1)[0] + ".1"
    return text.replace(address, "@HOST@").replace(gateway, "@GATEWAY@")


def _expected(path: str) -> Path:
    return EXPECTED / path.lstrip("/")


def test_the_expected_files_are_all_there():
    """Every listed file has its expected copy, and nothing else is kept: an empty folder cannot pass."""
    kept = sorted("/" + str(p.relative_to(EXPECTED)) for p in EXPECTED.rglob("*") if p.is_file())
    assert kept == sorted(FILES)


@pytest.mark.parametrize("path", FILES)
def test_rendered_byte_for_byte(host, path):
    text = _normalised(host, ok(host, "cat %s", path))
    assert text.strip(), f"{path} is empty"
    expected = _expected(path)
    if os.environ.get("METALAB_UPDATE_RENDERED") == "1":
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(text, encoding="utf-8")
    assert text == expected.read_text(encoding="utf-8"), f"{path} differs from {expected}"
