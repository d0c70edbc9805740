"""labctl sandbox inventory: what Ansible gets for the sandboxes that are up."""

import json

import pytest
import yaml
from click.testing import CliRunner

from metalab.labctl.cli import cli
from metalab.labctl.sandbox import inventory, rootfs, state

NSPAWN = {
    "name": "a",
    "kind": "nspawn",
    "ansible_host": "10.213.1.2",
    "ansible_port": 22,
    "ansible_user": "labadmin",
    "ansible_ssh_private_key_file": "/state/a/id_ed25519",
    "lab_http_proxy": "http://10.213.1.1:3128",
    "https_port": 443,
    "lab_address": "10.214.0.1",
    "pid": 4242,
    "index": 1,
}
VM = {
    "name": "v",
    "kind": "vm",
    "ansible_host": "127.0.0.1",
    "ansible_port": 40022,
    "ansible_user": "labadmin",
    "ansible_ssh_private_key_file": "/state/v/id_ed25519",
    "https_port": 40443,
    "pid": 4343,
}


def test_inventory_has_every_host_with_its_connection():
    data = yaml.safe_load(inventory.render([NSPAWN, VM], ["/ca/one.crt"]))
    hosts = data["all"]["hosts"]
    assert hosts["a"]["ansible_host"] == "10.213.1.2"
    assert hosts["a"]["ansible_ssh_private_key_file"] == "/state/a/id_ed25519"
    assert hosts["a"]["lab_http_proxy"] == "http://10.213.1.1:3128"
    assert hosts["v"]["ansible_port"] == 40022
    assert "lab_http_proxy" not in hosts["v"], "a VM reaches registries through qemu's NAT"
    assert hosts["a"]["lab_address"] == "10.214.0.1", "nspawn hosts reach each other on the lab network"
    assert "lab_address" not in hosts["v"]
    assert data["all"]["vars"]["ansible_become"] is True
    assert data["all"]["vars"]["lab_extra_ca_certificates"] == ["/ca/one.crt"]
    assert set(data["all"]["children"]["sandbox_nspawn"]["hosts"]) == {"a"}
    assert set(data["all"]["children"]["sandbox_vm"]["hosts"]) == {"v"}


def test_inventory_without_sandboxes_is_valid_and_empty():
    data = yaml.safe_load(inventory.render([], []))
    assert data["all"]["hosts"] == {}
    assert data["all"]["children"] == {}


def test_public_record_hides_internal_state():
    shown = state.public(NSPAWN)
    assert "pid" not in shown and "index" not in shown
    for key in ("name", "kind", "ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file"):
        assert key in shown


def _store(tmp_path, monkeypatch, *records):
    monkeypatch.setenv("METALAB_SANDBOX_DIR", str(tmp_path))
    for record in records:
        (tmp_path / record["name"]).mkdir()
        state.save(record)


def test_cli_inventory_lists_only_running_sandboxes(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch, NSPAWN, VM)
    monkeypatch.setattr(state, "alive", lambda pid, expect: pid == 4242)
    result = CliRunner().invoke(cli, ["sandbox", "inventory"])
    assert result.exit_code == 0, result.output
    assert set(yaml.safe_load(result.output)["all"]["hosts"]) == {"a"}


def test_cli_inventory_of_named_sandbox(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch, NSPAWN, VM)
    monkeypatch.setattr(state, "alive", lambda pid, expect: True)
    result = CliRunner().invoke(cli, ["sandbox", "inventory", "v"])
    assert set(yaml.safe_load(result.output)["all"]["hosts"]) == {"v"}


def test_cli_list_json_reports_state(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch, NSPAWN, VM)
    monkeypatch.setattr(state, "alive", lambda pid, expect: pid == 4343)
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(cli, ["sandbox", "list", "--json"]).output)}
    assert rows["a"]["state"] == "down"
    assert rows["v"]["state"] == "up"
    assert "pid" not in rows["v"]


def test_mirror_comes_from_the_machines_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    assert rootfs.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_legacy_sources_list(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
    )
    assert rootfs.debian_mirror(tmp_path) == "http://ftp.example/debian"


def test_missing_mirror_is_a_clear_error(tmp_path):
    import pytest

    from metalab.labctl.sandbox.errors import SandboxError

    with pytest.raises(SandboxError, match="cannot find a Debian bookworm mirror"):
        rootfs.debian_mirror(tmp_path)


def test_a_sandbox_that_fails_to_come_up_is_taken_down_and_its_log_quoted(tmp_path):
    from metalab.labctl.sandbox.errors import SandboxError

    log = tmp_path / "console.log"
    log.write_text("booting\nsshd: failed to start\n")
    downs = []
    expected = r"^no ssh; last lines of its output:\nbooting\nsshd: failed to start$"
    with pytest.raises(SandboxError, match=expected), state.removed_on_failure("s1", log, downs.append):
        raise SandboxError("no ssh")
    # Anything else passes through unchanged, after the clean-up.
    with pytest.raises(KeyboardInterrupt), state.removed_on_failure("s2", log, downs.append):
        raise KeyboardInterrupt
    assert downs == ["s1", "s2"]
