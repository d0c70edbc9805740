"""`labctl users list --usage`: each lab user's home usage (the usage file of her host) and runtime hours of the
last 7 days (metalab-guard usage), read on the lab hosts by playbooks/labctl/user_usage.yml, merged with the
inventory."""

from __future__ import annotations

import json
from typing import Any, Mapping

import click

from metalab.labctl import runner
from metalab.rules import human_size

REPORT_TASK = "Report"  # the task of playbooks/labctl/user_usage.yml whose results labctl reads
USAGE_KEYS = ("host", "home_used_bytes", "home_limit_bytes", "measured_at", "source", "cpu_hours_7d", "gpu_hours_7d")


def parse_report(host: str, msg: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One host's Report: {user: usage columns}, and warnings (pure)."""
    warnings: list[str] = []
    users: dict[str, dict[str, Any]] = {}

    def row(user: str) -> dict[str, Any]:
        return users.setdefault(user, {"host": host, "cpu_hours_7d": 0.0, "gpu_hours_7d": 0.0})

    text = str(msg.get("usage") or "")
    if text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            warnings.append(f"{host}: the usage file is not a JSON object")
            data = {}
        for user, entry in data.items():
            if isinstance(entry, dict):
                r = row(str(user))
                r.update(
                    home_used_bytes=entry.get("used_bytes"),
                    home_limit_bytes=entry.get("limit_bytes"),
                    measured_at=entry.get("measured_at"),
                    source=entry.get("source"),
                )
    else:
        warnings.append(f"{host}: no usage file yet ({msg.get('usage_error') or 'not readable'})")
    if str(msg.get("hours_rc")) == "0":
        try:
            for item in json.loads(str(msg.get("hours") or "{}")).get("usage", []):
                if item.get("kind") in ("cpu", "gpu"):
                    row(str(item["user"]))[f"{item['kind']}_hours_7d"] += float(item.get("hours") or 0)
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            warnings.append(f"{host}: unexpected answer from metalab-guard usage")
    else:
        warnings.append(f"{host}: metalab-guard usage failed: {str(msg.get('hours_error') or '').strip()[:200]}")
    for r in users.values():
        r["cpu_hours_7d"] = round(r["cpu_hours_7d"], 2)
        r["gpu_hours_7d"] = round(r["gpu_hours_7d"], 2)
    return users, warnings


def merge(rows: list[dict[str, Any]], per_host: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Inventory rows with the usage columns: one row per host that knows the user, or one with empty columns."""
    out = []
    for row in rows:
        found = [(h, users[row["name"]]) for h, users in sorted(per_host.items()) if row["name"] in users]
        if not found:
            out.append({**row, **{k: None for k in USAGE_KEYS}})
        for _, usage in found:
            out.append({**row, **{k: usage.get(k) for k in USAGE_KEYS}})
    return out


def for_table(row: Mapping[str, Any]) -> dict[str, Any]:
    """Human columns: home "312M / 1G", hours "1.50"."""
    used, limit = row.get("home_used_bytes"), row.get("home_limit_bytes")
    home = "-"
    if used is not None:
        home = human_size(int(used)) + (f" / {human_size(int(limit))}" if limit else " (no quota)")
    hours = "-"
    if row.get("cpu_hours_7d") is not None:
        hours = f"{row['cpu_hours_7d']:.2f} cpu, {row['gpu_hours_7d']:.2f} gpu"
    return {**row, "host": row.get("host") or "-", "home": home, "hours_7d": hours}


def fetch(inventory: str, hosts: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """{host: {user: usage}} from every lab host (warnings on stderr for hosts that did not answer)."""
    extravars: dict[str, Any] = {"metalab_target": hosts} if hosts else {}
    model = runner.ProgressModel(watch=frozenset({REPORT_TASK}))
    runner.run_playbook(
        runner.command_playbook("user_usage"), inventory=inventory, extravars=extravars, model=model, keep_artifacts=0
    )
    per_host: dict[str, dict[str, dict[str, Any]]] = {}
    for host, result in sorted(model.results.get(REPORT_TASK, {}).items()):
        msg = result.res.get("msg") or {}
        if result.outcome == "ok" and isinstance(msg, dict):
            per_host[host], warnings = parse_report(host, msg)
            for warning in warnings:
                click.echo(f"labctl: {warning}", err=True)
    for h in model.hosts.values():
        if h.failed or h.unreachable:
            click.echo(f"labctl: {h.name}: {h.message or 'failed'} (no usage from it)", err=True)
    return per_host
