"""What a guard run reports, and where a lab user finds the guard's notices in her home (shared by the guard run
and the drain, so neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple


class Refused(Exception):
    """The request is refused (exit code 2); nothing was changed."""


class Failure(Exception):
    """The request failed (exit code 1)."""


NOTICE_DIR = ".metalab"
NOTICE_FILE = "session-notice.txt"


@dataclass
class RunReport:
    skipped: bool = False
    warned: List[str] = field(default_factory=list)
    stopped: List[Tuple[str, str]] = field(default_factory=list)
    crashed: List[str] = field(default_factory=list)
    finished: List[str] = field(default_factory=list)
    promoted: List[str] = field(default_factory=list)
    orphans: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "skipped": self.skipped,
            "warned": self.warned,
            "stopped": [{"user": u, "reason": r} for u, r in self.stopped],
            "crashed": self.crashed,
            "finished_stops": self.finished,
            "recovered_starts": self.promoted,
            "orphans_removed": self.orphans,
            "errors": self.errors,
        }
