"""How labctl shows a playbook run: the live table and summary (rich) or plain lines, from a ProgressModel."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from metalab.labctl.runner import RESULT_EVENTS, ProgressModel, one_line


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


_STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold magenta"}


def progress_table(model: ProgressModel, now: float | None = None) -> Any:
    from rich.markup import escape
    from rich.table import Table

    now = time.time() if now is None else now
    table = Table(title=escape(model.play) or None, title_justify="left", expand=False)
    for header in ("host", "role / task", "ok", "changed", "failed", "elapsed"):
        table.add_column(header, justify="right" if header in ("ok", "changed", "failed", "elapsed") else "left")
    for h in model.hosts.values():
        task = escape(f"{h.role} : {h.task}" if h.role else h.task)
        if h.unreachable:
            task = "[magenta]unreachable[/]"
        failed = f"[red]{h.failed}[/]" if h.failed else "0"
        table.add_row(
            escape(h.name),
            task,
            str(h.ok),
            str(h.changed),
            failed,
            format_duration(h.elapsed(now) if h.busy else h.duration),
        )
    return table


def summary_table(model: ProgressModel) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Summary", title_justify="left")
    for header in ("host", "status", "ok", "changed", "failed", "unreachable", "skipped", "duration"):
        table.add_column(header, justify="left" if header in ("host", "status") else "right")
    for h in model.hosts.values():
        style = _STATUS_STYLE.get(h.status, "")
        table.add_row(
            escape(h.name),
            f"[{style}]{h.status}[/]",
            str(h.ok),
            str(h.changed),
            str(h.failed),
            str(h.unreachable),
            str(h.skipped),
            format_duration(h.duration),
        )
    return table


def plain_line(event: Mapping[str, Any]) -> str | None:
    """One line per play, task and host result; None for events not worth a line."""
    kind = event.get("event", "")
    data: Mapping[str, Any] = event.get("event_data") or {}
    if kind == "playbook_on_play_start":
        return f"PLAY {data.get('play') or data.get('name', '')}"
    if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
        return f"TASK {data.get('name') or data.get('task', '')}"
    if kind in RESULT_EVENTS and data.get("host"):
        res: Mapping[str, Any] = data.get("res") or {}
        outcome = RESULT_EVENTS[kind]
        if outcome == "ok" and res.get("changed"):
            outcome = "changed"
        if outcome == "failed" and data.get("ignore_errors"):
            outcome = "ignored"
        line = f"  {outcome}: {data['host']}"
        if outcome in ("failed", "unreachable"):
            line += f" - {one_line(res.get('msg'), '')}"
        return line
    return None


def summary_lines(model: ProgressModel) -> list[str]:
    lines = ["SUMMARY"]
    for h in model.hosts.values():
        lines.append(
            f"  {h.name} status={h.status} ok={h.ok} changed={h.changed} failed={h.failed} "
            f"unreachable={h.unreachable} skipped={h.skipped} duration={format_duration(h.duration)}"
        )
    return lines
