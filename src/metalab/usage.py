"""`labctl usage` (lives in metalab.session; the CLI loads each subcommand's ``cli``)."""

from metalab.session import usage as cli

__all__ = ["cli"]
