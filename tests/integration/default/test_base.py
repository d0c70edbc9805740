"""Behaviour of the base role on a converged nspawn lab host."""

import json

import pytest


def test_supported_platform_recorded_in_local_facts(host):
    facts = json.loads(host.file("/etc/ansible/facts.d/metalab.fact").content_string)
    assert facts["version"] == "0.1.0"
    assert "base" in facts["roles"]


def test_extra_ca_certificates_are_trusted(host):
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    installed = host.run("ls /usr/local/share/ca-certificates/").stdout.split()
    assert installed, "no metalab CA certificate installed"
    for name in installed:
        pem = host.file(f"/usr/local/share/ca-certificates/{name}").content_string.strip()
        body = "".join(pem.splitlines()[1:-1])
        assert body[:64] in bundle.replace("\n", "")


def test_package_registry_reachable_over_https_through_the_proxy(host):
    # pip fails with "no matching distribution" when the proxy's CA is not trusted.
    result = host.run(
        ". /etc/metalab/proxy.env; export https_proxy; curl -sS -o /dev/null -w '%{http_code}' "
        "https://pypi.org/simple/six/"
    )
    assert result.stdout == "200", result.stderr


@pytest.mark.parametrize("service", ["ssh", "cron"])
def test_core_services_running(host, service):
    assert host.service(service).is_running


def test_core_dumps_disabled(host):
    assert "hard    core    0" in host.file("/etc/security/limits.d/90-metalab.conf").content_string
    assert "Storage=none" in host.file("/etc/systemd/coredump.conf.d/90-metalab.conf").content_string


def test_lab_users_group_exists(host):
    assert host.group("labusers").exists
