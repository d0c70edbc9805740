"""`labctl usage` (lives in metalab.labctl.session; the CLI loads each subcommand's ``cli``)."""

from metalab.labctl.session import usage as cli

__all__ = ["cli"]
