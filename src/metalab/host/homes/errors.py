"""The one exception of the homes tool and its exit codes (like metalab-backup's)."""

from __future__ import annotations

from typing import List, Optional

CODES = {"failure": 1, "bad-input": 2, "refused": 3, "busy": 75}


class HomesError(Exception):
    """``code``: failure (tar, disk, a copy that does not verify), bad-input, refused (nothing changed), busy."""

    def __init__(self, message: str, code: str = "failure", details: Optional[List[str]] = None) -> None:
        super().__init__(message)
        if code not in CODES:
            raise ValueError(f"unknown HomesError code {code!r}")
        self.code = code
        self.message = message
        self.details = list(details or [])

    @property
    def exit_code(self) -> int:
        return CODES[self.code]
