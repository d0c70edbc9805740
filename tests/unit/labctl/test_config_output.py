"""Settings precedence (flag > env > file > default), output formats, shell completion."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from metalab.labctl import config, output
from metalab.labctl.cli import cli


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "labctl.toml"
    path.write_text('inventory = "lab/hosts.yml"\noutput = "csv"\n')
    monkeypatch.setenv("METALAB_CONFIG", str(path))
    monkeypatch.delenv("METALAB_INVENTORY", raising=False)
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    return path


def test_precedence(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.inventory(None) == str(cfg.parent / "lab" / "hosts.yml")  # relative to the file
    assert config.output_format(None) == "csv"
    monkeypatch.setenv("METALAB_INVENTORY", "/env/hosts.yml")
    monkeypatch.setenv("METALAB_OUTPUT", "json")
    assert config.inventory(None) == "/env/hosts.yml"
    assert config.output_format(None) == "json"
    assert config.inventory("/flag/hosts.yml") == "/flag/hosts.yml"
    assert config.output_format("table") == "table"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("METALAB_INVENTORY", raising=False)
    monkeypatch.delenv("METALAB_OUTPUT", raising=False)
    assert config.inventory(None) is None
    assert config.output_format(None) == "table"
    with pytest.raises(config.ConfigError, match="no inventory given"):
        config.require_inventory(None)


def test_bad_settings_are_named(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_OUTPUT", "yaml")
    with pytest.raises(config.ConfigError, match="'yaml' \\(from env\\)"):
        config.output_format(None)
    cfg.write_text('inventroy = "x"\n')
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.load_file()
    cfg.write_text("inventory = \n")
    with pytest.raises(config.ConfigError, match=str(cfg)):
        config.load_file()


ROWS = [{"host": "a", "status": "ok", "n": 1, "gpu": True}, {"host": "b,c", "status": "fail", "n": None, "gpu": False}]
COLUMNS = [output.Column("host"), output.Column("status", styled=True), output.Column("n"), output.Column("gpu")]


def render(fmt: str) -> str:
    stream = io.StringIO()
    output.emit(ROWS, COLUMNS, fmt, stream=stream, title="t")
    return stream.getvalue()


def test_output_formats() -> None:
    assert json.loads(render("json")) == ROWS
    assert render("csv") == 'host,status,n,gpu\na,ok,1,True\n"b,c",fail,,False\n'
    table = render("table")
    assert "b,c" in table and "fail" in table and "yes" in table


def test_configured_format_the_command_lacks_falls_back_to_table(cfg: Path) -> None:
    assert output.resolve_format(None, allowed=("table", "json")) == "table"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert "_LABCTL_COMPLETE" in result.output


def test_commands_are_registered() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for name in ("completion", "doctor", "provision", "users"):
        assert name in result.output


def test_table_to_a_pipe_is_wide_and_never_cuts_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reality: `labctl doctor | less` cut paths and actions with an ellipsis at rich's default 80 columns."""
    monkeypatch.delenv("COLUMNS", raising=False)
    long_path = "/var/lib/metalab-sandbox/some-host/id_ed25519-with-a-long-name"
    rows = [{"check": "ssh key readable", "detail": f"{long_path} is missing " * 4, "action": "create the key"}]
    columns = [output.Column("check"), output.Column("detail"), output.Column("action")]
    stream = io.StringIO()
    output.emit(rows, columns, "table", stream=stream)
    text = stream.getvalue()
    assert "…" not in text
    assert long_path in text  # a path narrower than the column is never split
    assert max(len(line) for line in text.splitlines()) <= output.PIPE_WIDTH
