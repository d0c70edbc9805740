"""`labctl backup` and `labctl users restore`: metalab-backup on the lab hosts (docs/labctl.md, "backup").

Every command is one run of playbooks/labctl/backup.yml, which runs ``metalab-backup ARGS --json`` as root on the
hosts (default: every host but the backup targets) and reports rc, stdout and stderr. Judging what came back is
pure (``status_row``, ``doctor_checks``, ``pick_host``) and unit-tested. Exit codes of a host's metalab-backup pass
through: 1 failure, 2 bad input, 3 refused, 75 busy.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from metalab import rules
from metalab.labctl import config, output, runner

REPORT_TASK = "Report"  # the task of playbooks/labctl/backup.yml whose results labctl reads
LAB_HOSTS = "all:!lab_backup_target"
EXIT_FAILED, EXIT_STALE = 1, 2


class BackupCommandError(click.ClickException):
    exit_code = EXIT_FAILED


@dataclass
class HostAnswer:
    host: str
    configured: bool
    rc: int
    stdout: str = ""
    stderr: str = ""
    problem: str = ""  # the host failed or was unreachable before metalab-backup ran

    @property
    def data(self) -> Any:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except json.JSONDecodeError:
            return None

    @property
    def message(self) -> str:
        """What went wrong, in metalab-backup's words when it said something."""
        data = self.data
        if isinstance(data, dict) and data.get("error"):
            return " ".join(str(data["error"]).split())
        text = self.stderr.strip() or self.stdout.strip() or self.problem or f"exit {self.rc}"
        return " ".join(text.splitlines()[-1].split()) if text else f"exit {self.rc}"


def answers_from(model: runner.ProgressModel) -> dict[str, HostAnswer]:
    """Per-host answers of the Report task, plus hosts that failed or were unreachable before it (pure)."""
    out: dict[str, HostAnswer] = {}
    for host, result in model.results.get(REPORT_TASK, {}).items():
        msg = result.res.get("msg") or {}
        if result.outcome == "ok" and isinstance(msg, dict):
            configured = str(msg.get("configured")).lower() in ("true", "1", "yes")
            out[host] = HostAnswer(host, configured, int(msg.get("rc", -1)), str(msg.get("stdout", "")),
                                   str(msg.get("stderr", "")))  # fmt: skip
    for h in model.hosts.values():
        if h.name not in out and (h.failed or h.unreachable):
            problem = ("unreachable: " if h.unreachable else "") + (h.message or "failed")
            out[h.name] = HostAnswer(h.name, True, -1, problem=problem)
    return out


def run_backup(args: list[str], *, inventory: str, hosts: str) -> dict[str, HostAnswer]:
    """``metalab-backup ARGS --json`` as root on ``hosts``."""
    model = runner.ProgressModel(watch=frozenset({REPORT_TASK}))
    job = runner.run_playbook(
        runner.command_playbook("backup"),
        inventory=inventory,
        extravars={"metalab_target": hosts, "metalab_backup_args": args},
        model=model,
        keep_artifacts=0,
    )
    answers = answers_from(model)
    if not answers:
        tail = "\n".join(model.messages)[-600:].strip()
        raise BackupCommandError(f"no lab host matched {hosts!r} or the run failed ({job.status}): {tail or '-'}")
    return answers


def _epoch(value: Any) -> float | None:
    """An ISO time or epoch seconds as epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _age(seconds: Any) -> str:
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def current_error(status: dict[str, Any]) -> str:
    """The last run's error, when no success came after it."""
    error = status.get("last_error") or {}
    if not error:
        return ""
    err_time, ok_time = _epoch(error.get("time")), _epoch(status.get("last_success"))
    if ok_time is not None and err_time is not None and ok_time > err_time:
        return ""
    return " ".join(str(error.get("message") or "failed").split())


def status_row(answer: HostAnswer, now: float) -> dict[str, Any]:
    """One row of `labctl backup status` (pure). ``state``: ok, stale, error, not configured, unreachable."""
    row: dict[str, Any] = {"host": answer.host, "state": "ok", "snapshot": None, "time": None, "age": "",
                           "age_s": None, "size": "", "size_bytes": None, "last_check": "", "error": "",
                           "stale": None, "repository": None}  # fmt: skip
    if not answer.configured:
        return {**row, "state": "not configured", "error": "lab_backup_repository is not set"}
    status = answer.data if isinstance(answer.data, dict) else None
    if status is None or "last_snapshot" not in status:
        state = "unreachable" if answer.problem.startswith("unreachable") else "error"
        return {**row, "state": state, "error": answer.message}
    snap = status.get("last_snapshot") or {}
    age = status.get("age_s")
    check = status.get("last_check") or {}
    check_time = _epoch(check.get("time"))
    row.update(
        snapshot=snap.get("short_id") or str(snap.get("id") or "")[:8] or None,
        time=snap.get("time"),
        age_s=age,
        age=_age(age) if snap else "never",
        size_bytes=snap.get("size_bytes"),
        size=rules.human_size(int(snap["size_bytes"])) if snap.get("size_bytes") is not None else "",
        last_check=(("ok" if check.get("ok") else "FAILED") + f" {_age(now - check_time)} ago") if check_time else "",
        error=current_error(status),
        stale=bool(status.get("stale")),
        repository=status.get("repository"),
    )
    if answer.rc != 0 and not row["error"]:
        row["error"] = answer.message
    row["state"] = "error" if row["error"] else ("stale" if row["stale"] else "ok")
    return row


def doctor_checks(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(check, status, detail, action) for labctl doctor, from the probe report's backup_* keys (pure)."""
    check = "backup"
    if str(report.get("backup_configured")).lower() not in ("true", "1", "yes"):
        return [(check, "n/a", "lab_backup_repository is not set", "")]
    answer = HostAnswer("", True, int(report.get("backup_rc", -1)), str(report.get("backup_stdout") or ""),
                        str(report.get("backup_stderr") or ""))  # fmt: skip
    row = status_row(answer, float(report.get("now") or time.time()))
    why = "on the host: metalab-backup status; journalctl -u metalab-backup"
    if row["state"] == "error":
        return [(check, "fail", f"the last backup failed: {row['error']}", f"fix it, then labctl backup run; {why}")]
    if row["state"] == "stale":
        detail = f"last good backup {row['age']} ago" if row["snapshot"] else "no backup yet"
        return [(check, "fail", f"stale: {detail}", f"labctl backup run; {why}")]
    return [(check, "ok", f"snapshot {row['snapshot']}, {row['age']} ago, {row['size']}", "")]


STATUS_COLUMNS = [
    output.Column("host"),
    output.Column("state", styled=True),
    output.Column("snapshot", "last snapshot"),
    output.Column("age", justify="right"),
    output.Column("size", justify="right"),
    output.Column("last_check", "last check"),
    output.Column("stale"),
    output.Column("error", "errors"),
]
INVENTORY_OPTION = click.option(
    "-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY]."
)


def _inventory(flag: str | None) -> str:
    return str(config.require_inventory(flag))


@click.group("backup")
def cli() -> None:
    """Backups of the lab homes (restic, metalab-backup on each lab host)."""


@cli.command("status")
@click.option("--host", metavar="HOST", help="Lab host (pattern); default: every lab host.")
@INVENTORY_OPTION
@output.output_options()
def status_cmd(host: str | None, inventory: str | None, output: str | None) -> None:  # noqa: A002 - the option's name
    """Per lab host: last snapshot, its age and size, last check, errors, stale.

    Exit code 0 when every configured host is fine, 2 when one is stale or its last run failed, 1 when a host
    could not be asked.
    """
    from metalab.labctl import output as out

    fmt = out.resolve_format(output)
    answers = run_backup(["status"], inventory=_inventory(inventory), hosts=host or LAB_HOSTS)
    rows = [status_row(a, time.time()) for _, a in sorted(answers.items())]
    out.emit(rows, STATUS_COLUMNS, fmt, title="backups")
    states = {r["state"] for r in rows}
    if "unreachable" in states:
        sys.exit(EXIT_FAILED)
    if states & {"error", "stale"}:
        sys.exit(EXIT_STALE)


def _fail(answers: dict[str, HostAnswer]) -> None:
    bad = [a for a in answers.values() if a.rc != 0]
    for a in bad:
        click.echo(f"labctl: {a.host}: {a.message}", err=True)
    if bad:
        codes = {a.rc for a in bad}
        sys.exit(codes.pop() if len(codes) == 1 and codes & {2, 3, 75} else EXIT_FAILED)


def _configured(answers: dict[str, HostAnswer], hosts: str) -> dict[str, HostAnswer]:
    configured = {h: a for h, a in answers.items() if a.configured}
    if not configured:
        raise BackupCommandError(f"no host of {hosts!r} has backups configured (lab_backup_repository)")
    return configured


@cli.command("run")
@click.option("--host", metavar="HOST", help="Lab host (pattern); default: every lab host.")
@INVENTORY_OPTION
def run_cmd(host: str | None, inventory: str | None) -> None:
    """Back up now (and forget old snapshots by lab_backup_keep); refused on a host where one is running."""
    hosts = host or LAB_HOSTS
    started = time.monotonic()
    answers = _configured(run_backup(["run"], inventory=_inventory(inventory), hosts=hosts), hosts)
    for name, a in sorted(answers.items()):
        if a.rc == 0:
            data = a.data if isinstance(a.data, dict) else {}
            found = data.get("snapshot")
            snap: dict[str, Any] = found if isinstance(found, dict) else {}
            size = f", {rules.human_size(int(snap['size_bytes']))}" if snap.get("size_bytes") is not None else ""
            took = f" in {data['total_seconds']:.1f}s" if isinstance(data.get("total_seconds"), (int, float)) else ""
            click.echo(f"{name}: backed up, snapshot {str(snap.get('id', '?'))[:8]}{size}{took}")
    click.echo(f"({time.monotonic() - started:.0f}s)", err=True)
    _fail(answers)


@cli.command("restore-host")
@click.option("--host", metavar="HOST", required=True, help="The lab host whose homes volume is new and empty.")
@click.option("--snapshot", metavar="ID", help="Snapshot to restore (default: the host's latest).")
@INVENTORY_OPTION
def restore_host_cmd(host: str, snapshot: str | None, inventory: str | None) -> None:
    """Restore every home of HOST onto a fresh homes volume (refused when a home to write is not empty)."""
    args = ["restore-host"] + (["--snapshot", snapshot] if snapshot else [])
    answers = _configured(run_backup(args, inventory=_inventory(inventory), hosts=host), host)
    if len(answers) != 1:
        raise click.UsageError(f"{len(answers)} hosts matched {host!r}: name one lab host")
    _fail(answers)
    a = next(iter(answers.values()))
    data = a.data if isinstance(a.data, dict) else {}
    homes = ", ".join(data.get("homes") or []) or "no home"
    click.echo(f"{a.host}: restored {homes} from snapshot {str(data.get('snapshot', '?'))[:8]}")


def _snapshots(data: Any) -> list[Any]:
    """The snapshots of `metalab-backup snapshots USER --json`: {"user", "snapshots": [...]}."""
    found = data.get("snapshots") if isinstance(data, dict) else data
    return found if isinstance(found, list) else []


def pick_host(user: str, answers: dict[str, HostAnswer]) -> str:
    """The one host whose backups hold USER (from `metalab-backup snapshots USER` on each host; pure)."""
    having = sorted(h for h, a in answers.items() if a.configured and a.rc == 0 and _snapshots(a.data))
    if len(having) == 1:
        return having[0]
    if having:
        raise click.UsageError(f"backups of {user} are on {', '.join(having)}: choose one with --host")
    problems = "; ".join(f"{h}: {a.message}" for h, a in sorted(answers.items()) if a.configured and a.rc != 0)
    raise BackupCommandError(f"no backup of {user} on any lab host" + (f" ({problems})" if problems else ""))


@click.command("restore")
@click.argument("name")
@click.option("--path", "path", metavar="P", help="Only this file or folder, relative to her home.")
@click.option("--snapshot", metavar="ID", help="From this snapshot (default: the latest).")
@click.option("--before", metavar="TIME", help="From the latest snapshot before this ISO time.")
@click.option("--host", metavar="HOST", help="Lab host (default: the one whose backups hold NAME).")
@click.option("--json", "as_json", is_flag=True, help="Print {host, target, files, bytes, snapshot} as JSON.")
@INVENTORY_OPTION
def restore_cmd(
    name: str, path: str | None, snapshot: str | None, before: str | None, host: str | None, as_json: bool,
    inventory: str | None,
) -> None:  # fmt: skip
    """Restore lab user NAME's home (or --path in it) from a backup into a new dated folder of her home.

    Never over her files: the folder is <home>/restored/<time>-<snapshot>/. Refused when it does not fit her quota.
    """
    if snapshot and before:
        raise click.UsageError("--snapshot and --before exclude each other")
    inv = _inventory(inventory)
    target = host or pick_host(name, run_backup(["snapshots", name], inventory=inv, hosts=LAB_HOSTS))
    args = ["restore", name] + (["--snapshot", snapshot] if snapshot else []) + (["--before", before] if before else [])
    args += ["--path", path] if path else []
    answers = _configured(run_backup(args, inventory=inv, hosts=target), target)
    if len(answers) != 1:
        raise click.UsageError(f"{len(answers)} hosts matched {target!r}: name one lab host with --host")
    _fail(answers)
    a = next(iter(answers.values()))
    data = dict(a.data) if isinstance(a.data, dict) else {}
    if as_json:
        click.echo(json.dumps({"host": a.host, **data}, sort_keys=True))
        return
    size = rules.human_size(int(data.get("bytes") or 0))
    click.echo(f"restored {data.get('files', '?')} files ({size}) of {name} from snapshot "
               f"{str(data.get('snapshot', '?'))[:8]} on {a.host} into:", err=True)  # fmt: skip
    click.echo(str(data.get("target", "")))
