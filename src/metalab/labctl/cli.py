"""labctl: the lab administrator's command line."""

from __future__ import annotations

import importlib
import sys

import click

from metalab import __version__

# Each entry is a module defining a click command or group called ``cli``; the
# subcommand takes the name given here. Modules are imported on first use so
# that `labctl --help` and shell completion stay fast.
SUBCOMMANDS = {
    "sandbox": "metalab.labctl.sandbox.cli",
    "completion": "metalab.labctl.config",
    "doctor": "metalab.labctl.doctor",
    "provision": "metalab.labctl.provision",
    "users": "metalab.labctl.signup",  # metalab.labctl.users' group with the sign-up commands added
    "session": "metalab.labctl.session",
    "usage": "metalab.labctl.usage",
    "backup": "metalab.labctl.backup",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        command = importlib.import_module(target).cli
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labctl")
def cli() -> None:
    """Run and inspect a metalab Studio Lab."""


def main() -> None:
    try:
        cli(prog_name="labctl")
    except KeyboardInterrupt:
        sys.exit(130)
