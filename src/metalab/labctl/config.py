"""labctl settings and shell completion.

Settings come from, highest first: a command-line flag, an environment variable
(``METALAB_INVENTORY``, ``METALAB_OUTPUT``, ``METALAB_MITOGEN``), the config file
(``$METALAB_CONFIG``, else ``~/.config/metalab/labctl.toml``), then the default.

Config file (TOML; a relative inventory path is relative to the file)::

    inventory = "~/lab/inventory/hosts.yml"
    output = "table"        # table | json | csv
    mitogen = false         # run playbooks with Mitogen for Ansible (the optional extra)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import tomllib

OUTPUT_FORMATS = ("table", "json", "csv")
SETTINGS = ("inventory", "output", "mitogen")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(click.ClickException):
    pass


def config_path() -> Path:
    env = os.environ.get("METALAB_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "metalab" / "labctl.toml"


def load_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    if "inventory" in data:
        inv = Path(str(data["inventory"])).expanduser()
        data["inventory"] = str(inv if inv.is_absolute() else (path.parent / inv))
    return data


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str  # flag | env | file | default


def resolve(name: str, flag: str | None, default: str | None = None) -> Setting:
    """One setting by precedence: flag > env (METALAB_<NAME>) > config file > default."""
    if flag:
        return Setting(flag, "flag")
    env = os.environ.get(f"METALAB_{name.upper()}")
    if env:
        return Setting(env, "env")
    data = load_file()
    if data.get(name):
        return Setting(str(data[name]), "file")
    return Setting(default, "default")


def inventory(flag: str | None) -> str | None:
    """The inventory path, or None to let ansible.cfg's default apply."""
    value = resolve("inventory", flag).value
    return str(Path(value).expanduser()) if value else None


def require_inventory(flag: str | None) -> Path:
    value = inventory(flag)
    if not value:
        raise ConfigError(
            f"no inventory given: pass -i INVENTORY, set METALAB_INVENTORY, or set inventory in {config_path()}"
        )
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"inventory {path} does not exist")
    return path


def output_format(flag: str | None) -> str:
    setting = resolve("output", flag, "table")
    value = (setting.value or "table").lower()
    if value not in OUTPUT_FORMATS:
        raise ConfigError(f"output {value!r} (from {setting.source}) is not one of {', '.join(OUTPUT_FORMATS)}")
    return value


def mitogen(flag: bool | None) -> bool:
    """Whether playbooks run with Mitogen for Ansible: --mitogen/--no-mitogen > METALAB_MITOGEN > file > off."""
    if flag is not None:
        return flag
    env = os.environ.get("METALAB_MITOGEN")
    if env:
        value, source = env, "METALAB_MITOGEN"
    else:
        data = load_file()
        if "mitogen" not in data:
            return False
        if isinstance(data["mitogen"], bool):
            return data["mitogen"]
        value, source = str(data["mitogen"]), f"mitogen in {config_path()}"
    word = value.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ConfigError(f"{source} = {value!r} is not a boolean (use 1/0, true/false, yes/no)")
    return word in _TRUE


# --- shell completion (click's built-in; `labctl completion SHELL` prints the script) ------------------------

_SOURCE = {
    "bash": 'eval "$(_LABCTL_COMPLETE=bash_source labctl)"',
    "zsh": 'eval "$(_LABCTL_COMPLETE=zsh_source labctl)"',
    "fish": "_LABCTL_COMPLETE=fish_source labctl | source",
}


@click.command("completion")
@click.argument("shell", type=click.Choice(sorted(_SOURCE)))
def cli(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: labctl completion bash > ~/.local/share/bash-completion/completions/labctl
    zsh:  labctl completion zsh > "${fpath[1]}/_labctl"
    fish: labctl completion fish > ~/.config/fish/completions/labctl.fish
    Or evaluate it at shell start-up, e.g. in ~/.bashrc:
      eval "$(_LABCTL_COMPLETE=bash_source labctl)"
    """
    from click.shell_completion import get_completion_class

    from metalab.labctl.cli import cli as root

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.ClickException(f"click has no completion for {shell}")
    click.echo(cls(root, {}, "labctl", "_LABCTL_COMPLETE").source())
