"""What the portal's pages say and which paths it trusts: sizes, durations, redirects, lab URLs, refusals."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Optional, Tuple
from urllib.parse import unquote, urlsplit

from metalab.rules import USER_NAME

LAB_PREFIX = re.compile(r"\A/user/([^/]+)(?:/|\Z)")


def human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_seconds(seconds: Optional[int]) -> str:
    if seconds is None:
        return "no limit"
    s = max(0, int(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def human_time(stamp: Optional[str]) -> str:
    """``2026-11-30 12:03:11 +00:00`` for restic's ``2026-11-30T12:03:11.123456789+00:00`` (as is when unreadable)."""
    if not stamp:
        return "n/a"
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", stamp)
    if match is None:
        return stamp
    try:
        when = datetime.fromisoformat(match.group(1))
    except ValueError:
        return stamp
    zone = match.group(2) or ""
    return when.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if zone in ("Z", "+00:00") else f" {zone}" if zone else "")


def safe_next(target: Optional[str]) -> str:
    """Only paths on this site (no scheme, no host, no ``//``, no backslashes): no open redirect after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def lab_user_of(uri: Optional[str]) -> Optional[str]:
    """The NAME of ``/user/NAME/...`` in the original URI, or None when the URI could mean something else to nginx
    (dot segments or encoded slashes, which nginx resolves before routing)."""
    if not uri:
        return None
    path = urlsplit(uri).path
    decoded = unquote(path)
    if "\\" in decoded or "//" in decoded or any(seg in (".", "..") for seg in decoded.split("/")):
        return None
    if "%2f" in path.lower() or "%5c" in path.lower():
        return None
    match = LAB_PREFIX.match(decoded)
    if match is None or not USER_NAME.fullmatch(match.group(1)):
        return None
    return match.group(1)


def refusal_title(message: str) -> Tuple[str, str]:
    """(page title, kind) for a guard refusal message."""
    if "no GPU runtime available" in message:
        return "No GPU runtime available right now", "no-gpu"
    if "budget exhausted" in message:
        return "Budget exhausted", "budget"
    if "already has" in message:
        return "A runtime is already running", "running"
    if "already in progress" in message:
        return "A start or stop is already in progress", "busy"
    return "The runtime was not started", "refused"
