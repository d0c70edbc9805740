from __future__ import annotations


class SandboxError(Exception):
    """A problem the user can act on; the CLI prints it as one line."""
