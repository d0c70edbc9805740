"""The lab network nspawn sandboxes share: only in namespaces of its own, gone with the last sandbox."""

import subprocess

import pytest

from metalab.labctl.sandbox import labnet
from metalab.labctl.sandbox.errors import SandboxError


class FakeIp:
    """Plays `ip` for one labnet namespace: records every call, knows which links exist in it."""

    def __init__(self, namespace_exists: bool, links: list[str]):
        self.namespace_exists = namespace_exists
        self.links = list(links)
        self.calls: list[list[str]] = []

    def run(self, argv, **_kwargs):
        self.calls.append(argv)
        out, rc = "", 0
        if argv[:3] == ["ip", "netns", "add"]:
            self.namespace_exists = True
        elif argv[:3] == ["ip", "netns", "del"]:
            self.namespace_exists = False
        elif argv[3:5] == ["-o", "link"]:
            out = "".join(f"{n}: {name}@if3: <UP> mtu 1500\n" for n, name in enumerate(["lo", *self.links], 1))
        elif argv[3:5] == ["link", "show"]:
            rc = 0 if argv[5] in self.links else 1
        elif argv[3:5] == ["link", "add"]:
            self.links.append(argv[5])
        elif argv[3:5] == ["link", "del"]:
            self.links.remove(argv[5])
        return subprocess.CompletedProcess(argv, rc, out, "")


@pytest.fixture
def fake_ip(monkeypatch, tmp_path):
    def make(namespace_exists=False, links=()):
        fake = FakeIp(namespace_exists, list(links))
        monkeypatch.setattr(labnet.subprocess, "run", fake.run)
        monkeypatch.setattr(labnet, "exists", lambda: fake.namespace_exists)
        monkeypatch.setattr(labnet, "LOCK", tmp_path / "labnet.lock")
        return fake

    return make


def test_addresses_are_deterministic_per_index():
    assert labnet.address(1) == "10.214.0.1"
    assert labnet.address(37) == "10.214.0.37"
    with pytest.raises(SandboxError, match="no lab network address"):
        labnet.address(255)


def test_attach_builds_the_bridge_in_its_own_namespace_only(fake_ip):
    fake = fake_ip()
    assert labnet.attach("metalab-a", 3) == "10.214.0.3"
    assert ["ip", "netns", "add", "ml-labnet"] in fake.calls
    assert ["ip", "-n", "ml-labnet", "link", "add", "labbr0", "type", "bridge"] in fake.calls
    veth = ["ip", "-n", "ml-labnet", "link", "add", "mllab3", "type", "veth", "peer", "name", "lab0", "netns"]
    assert veth + ["metalab-a"] in fake.calls
    assert ["ip", "-n", "metalab-a", "addr", "add", "10.214.0.3/24", "dev", "lab0"] in fake.calls
    # Never the root namespace: every link or address change names a namespace of its own.
    for argv in fake.calls:
        assert argv[:2] == ["ip", "-n"] or argv[:2] == ["ip", "netns"], argv
        assert "forwarding" not in " ".join(argv) and argv[1] not in ("route", "iptables")


def test_second_sandbox_reuses_the_bridge(fake_ip):
    fake = fake_ip(namespace_exists=True, links=["labbr0", "mllab1"])
    labnet.attach("metalab-b", 2)
    assert ["ip", "netns", "add", "ml-labnet"] not in fake.calls
    assert ["ip", "-n", "ml-labnet", "link", "add", "labbr0", "type", "bridge"] not in fake.calls
    assert fake.links == ["labbr0", "mllab1", "mllab2"]


def test_down_removes_its_port_and_keeps_the_network_for_the_others(fake_ip):
    fake = fake_ip(namespace_exists=True, links=["labbr0", "mllab1", "mllab2"])
    labnet.detach(1)
    assert fake.links == ["labbr0", "mllab2"]
    assert fake.namespace_exists, "sandbox 2 still uses the lab network"


def test_last_one_down_removes_the_namespace(fake_ip):
    fake = fake_ip(namespace_exists=True, links=["labbr0", "mllab2"])
    labnet.detach(2)
    assert not fake.namespace_exists


def test_down_all_removes_a_leftover_network_without_sandboxes(fake_ip):
    fake = fake_ip(namespace_exists=True, links=["labbr0"])
    labnet.detach(None)
    assert not fake.namespace_exists
    fake = fake_ip(namespace_exists=False)
    labnet.detach(None)
    assert fake.calls == [], "nothing to do without the namespace"


def test_cli_down_all_also_removes_the_lab_network(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from metalab.labctl.cli import cli
    from metalab.labctl.sandbox import nspawn, validate

    monkeypatch.setenv("METALAB_SANDBOX_DIR", str(tmp_path))
    monkeypatch.setattr(validate, "require_root", lambda: None)
    detached = []
    monkeypatch.setattr(labnet, "detach", detached.append)
    monkeypatch.setattr(nspawn, "down", lambda name: None)
    result = CliRunner().invoke(cli, ["sandbox", "down", "--all"])
    assert result.exit_code == 0, result.output
    assert detached == [None], "a lab network without sandboxes goes with --all"
    detached.clear()
    (tmp_path / "other").mkdir()
    result = CliRunner().invoke(cli, ["sandbox", "down", "other"])
    assert detached == [], "a named down leaves the network to its sandbox's own down"
