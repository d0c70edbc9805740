"""Mitogen for Ansible, the optional extra: the environment that switches it on, the setting, the error without it."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from metalab.labctl import config, runner
from metalab.labctl.cli import cli


def fake_mitogen(root: Path, *, strategy: bool = True) -> Path:
    """An importable ansible_mitogen package under ``root``; returns its strategy plugin directory."""
    strategies = root / "ansible_mitogen" / "plugins" / "strategy"
    strategies.mkdir(parents=True)
    (root / "ansible_mitogen" / "__init__.py").write_text("")
    if strategy:
        (strategies / "mitogen_linear.py").write_text("")
    return strategies


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean import path entry searched first, and no ansible_mitogen imported or configured already."""
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "ansible_mitogen", raising=False)
    monkeypatch.delenv("ANSIBLE_STRATEGY_PLUGINS", raising=False)
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    return tmp_path / "site"


@pytest.fixture
def no_mitogen(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "ansible_mitogen" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_env_points_ansible_at_the_installed_strategy(site: Path) -> None:
    strategies = fake_mitogen(site)
    assert runner.mitogen_env() == {
        "ANSIBLE_STRATEGY_PLUGINS": str(strategies),
        "ANSIBLE_STRATEGY": "mitogen_linear",
    }
    assert "ansible_mitogen" not in sys.modules, "found, not imported (importing it imports Ansible)"


def test_env_keeps_strategy_plugins_already_configured(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    strategies = fake_mitogen(site)
    monkeypatch.setenv("ANSIBLE_STRATEGY_PLUGINS", f"/opt/mine:{strategies}")
    assert runner.mitogen_env()["ANSIBLE_STRATEGY_PLUGINS"] == f"{strategies}:/opt/mine"


@pytest.mark.usefixtures("site", "no_mitogen")
def test_missing_module_names_the_fix() -> None:
    with pytest.raises(runner.MitogenNotInstalled, match=r"not installed for .*: pip install 'metalab\[mitogen\]'$"):
        runner.mitogen_env()


def test_package_without_the_strategy_is_refused(site: Path) -> None:
    fake_mitogen(site, strategy=False)
    with pytest.raises(runner.MitogenNotInstalled, match=r"no plugins/strategy/mitogen_linear.py.*metalab\[mitogen\]"):
        runner.mitogen_env()


def test_run_playbook_passes_the_environment(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    strategies = fake_mitogen(site)
    calls: list[dict[str, Any]] = []

    def fake_run(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return types.SimpleNamespace(status="successful", rc=0)

    monkeypatch.setitem(sys.modules, "ansible_runner", types.SimpleNamespace(run=fake_run))
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    runner.run_playbook("site", mitogen=True)
    runner.run_playbook("site")
    with_mitogen, without = (c["envvars"] for c in calls)
    assert with_mitogen["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert with_mitogen["ANSIBLE_STRATEGY_PLUGINS"] == str(strategies)
    assert with_mitogen["ANSIBLE_CONFIG"] == without["ANSIBLE_CONFIG"]
    assert not {"ANSIBLE_STRATEGY", "ANSIBLE_STRATEGY_PLUGINS"} & set(without)
    assert {k: v for k, v in with_mitogen.items() if not k.startswith("ANSIBLE_STRATEGY")} == without


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "labctl.toml"
    monkeypatch.setenv("METALAB_CONFIG", str(path))
    monkeypatch.delenv("METALAB_MITOGEN", raising=False)
    return path


def test_setting_precedence(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.mitogen(None) is False  # no file, no env
    cfg.write_text("mitogen = true\n")
    assert config.mitogen(None) is True
    monkeypatch.setenv("METALAB_MITOGEN", "0")
    assert config.mitogen(None) is False
    monkeypatch.setenv("METALAB_MITOGEN", "yes")
    assert config.mitogen(None) is True
    assert config.mitogen(False) is False  # --no-mitogen wins
    monkeypatch.setenv("METALAB_MITOGEN", "")  # empty = unset: the file decides
    assert config.mitogen(None) is True


def test_bad_setting_is_named(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALAB_MITOGEN", "maybe")
    with pytest.raises(config.ConfigError, match="METALAB_MITOGEN = 'maybe' is not a boolean"):
        config.mitogen(None)
    monkeypatch.delenv("METALAB_MITOGEN")
    cfg.write_text('mitogen = "sometimes"\n')
    with pytest.raises(config.ConfigError, match=f"mitogen in {cfg}"):
        config.mitogen(None)


@pytest.mark.usefixtures("site", "no_mitogen", "cfg")
def test_provision_with_mitogen_missing_fails_before_running(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may run without Mitogen installed")

    monkeypatch.setattr(runner, "run_playbook", must_not_run)
    for args, env in ((["--mitogen"], {}), ([], {"METALAB_MITOGEN": "1"})):
        result = CliRunner().invoke(cli, ["provision", "--plain", *args], env=env)
        assert result.exit_code == 1, result.output
        assert "pip install 'metalab[mitogen]'" in result.output
