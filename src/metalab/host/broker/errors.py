"""The broker's error type: an answer ``{"ok": false, "error": {"code", "message"}}`` (codes: service.py)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
