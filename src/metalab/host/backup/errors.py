"""The one exception of metalab-backup and its exit codes."""

from __future__ import annotations

CODES = {"failure": 1, "bad-input": 2, "refused": 3, "busy": 75}


class BackupError(Exception):
    """``code`` is one of failure (repository, password, target), bad-input, refused (nothing done), busy."""

    def __init__(self, message: str, code: str = "failure") -> None:
        super().__init__(message)
        if code not in CODES:
            raise ValueError(f"unknown BackupError code {code!r}")
        self.code = code
        self.message = message

    @property
    def exit_code(self) -> int:
        return CODES[self.code]
