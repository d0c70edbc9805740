"""Per-task wall time of a playbook run, for the benchmarks (enabled with ANSIBLE_CALLBACKS_ENABLED=metalab_profile).

Writes ``{"tasks": [{"name", "seconds", "changed"}...], "total_s"}`` to $METALAB_PROFILE_OUT when set and
prints the slowest tasks at the end when $METALAB_PROFILE_TOP is set.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: metalab_profile
type: aggregate
short_description: per-task wall time for metalab's benchmarks
description: Records how long each task took (all hosts together) and which tasks reported changed.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "metalab_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._tasks: List[Dict[str, Any]] = []
        self._current: Optional[Dict[str, Any]] = None
        self._start = time.monotonic()

    def _close(self) -> None:
        if self._current is not None:
            self._current["seconds"] = time.monotonic() - self._current.pop("t0")
            self._tasks.append(self._current)
            self._current = None

    def _open(self, name: str) -> None:
        self._close()
        self._current = {"name": name, "t0": time.monotonic(), "changed": []}

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._open(task.get_name())

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._open("handler: " + task.get_name())

    def v2_runner_on_ok(self, result: Any) -> None:
        if self._current is not None and result._result.get("changed"):
            self._current["changed"].append(result._host.get_name())

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        total = time.monotonic() - self._start
        out = os.environ.get("METALAB_PROFILE_OUT")
        if out:
            with open(out, "w", encoding="utf-8") as fh:
                json.dump({"total_s": total, "tasks": self._tasks}, fh, indent=1)
        top = int(os.environ.get("METALAB_PROFILE_TOP") or 0)
        if top:
            self._display.display(f"metalab_profile: {total:.1f}s in {len(self._tasks)} tasks; slowest:")
            for task in sorted(self._tasks, key=lambda t: -t["seconds"])[:top]:
                self._display.display(f"  {task['seconds']:6.2f}s  {task['name']}")
