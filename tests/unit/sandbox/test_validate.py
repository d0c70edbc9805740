"""labctl sandbox: argument validation and errors a user sees before anything is made."""

import pytest
from click.testing import CliRunner

from metalab.labctl.cli import cli
from metalab.labctl.sandbox import validate
from metalab.labctl.sandbox.errors import SandboxError


@pytest.mark.parametrize("name", ["a", "lab-1", "ml-default", "x" * 20])
def test_valid_names(name):
    assert validate.name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "../etc", "Lab", "1abc", "-a", "a b", "x" * 21, "a_b"])
def test_invalid_names_are_refused(name):
    with pytest.raises(SandboxError, match="invalid sandbox name"):
        validate.name(name)


@pytest.mark.parametrize(("text", "size"), [("64M", 64 * 2**20), ("2G", 2 * 2**30), ("1T", 2**40), ("4G", 4 * 2**30)])
def test_sizes(text, size):
    assert validate.size(text) == size


@pytest.mark.parametrize("text", ["4X", "4", "G", "-1G", "1.5G", "0G", "4GB", "32M"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(SandboxError, match=r"invalid size"):
        validate.size(text)


def test_unknown_kind_is_refused():
    with pytest.raises(SandboxError, match="unknown sandbox kind 'docker'"):
        validate.kind("docker")


def test_missing_tools_name_the_packages_to_install():
    with pytest.raises(SandboxError, match=r"apt-get install debootstrap systemd-container"):
        validate.require_tools("nspawn", which=lambda tool: None if tool in ("debootstrap", "systemd-nspawn") else "/x")


def test_present_tools_pass():
    validate.require_tools("vm", which=lambda tool: f"/usr/bin/{tool}")


def test_require_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SandboxError, match="need root"):
        validate.require_root()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "a/b"], "invalid sandbox name 'a/b'"),
        (["up", "a", "--kind", "lxc"], "unknown sandbox kind 'lxc'"),
        (["up", "a", "--vm", "--nvme-size", "4X"], "invalid size '4X'"),
        (["up", "a", "--nvme-size", "2G"], "--nvme-size needs a vm sandbox"),
        (["down"], "name a sandbox"),
        (["inventory", "nope"], "no sandbox up named nope"),
    ],
)
def test_cli_errors_are_one_line_and_change_nothing(argv, message, tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_SANDBOX_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(cli, ["sandbox", *argv])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "a").exists()


def test_cli_refuses_without_root(tmp_path, monkeypatch):
    monkeypatch.setenv("METALAB_SANDBOX_DIR", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["sandbox", "up", "a"])
    assert result.exit_code == 2
    assert "need root" in result.output
