"""`labctl session` and `labctl usage`: runtimes on the lab hosts, through the `metalab.lab.lab_session` module.

Every command is one run of playbooks/labctl/session.yml (``metalab.lab.lab_session``, which calls ``metalab-guard``
on the host) through labctl's executor: one fan-out over all hosts for ``list`` and ``usage``, the user's home host
(metalab.labctl.layout) for the others. Its artifacts (events included) are not kept: they go with the run's private
0700 directory, so a token shown by ``labctl session token`` is not left on the controller's disk; on the host it
never appears on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click

from metalab.labctl import config, output, runner

TASK = "Run lab_session"  # the task of playbooks/labctl/session.yml whose results labctl reads
EXIT_FAILED, EXIT_REFUSED = 1, 2


@dataclass
class HostResult:
    host: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    unreachable: bool = False

    @property
    def message(self) -> str:
        msg = self.result.get("msg") or ""
        return " ".join(str(msg).split()) or ("unreachable" if self.unreachable else "failed")

    @property
    def refused(self) -> bool:
        return bool(self.result.get("refused"))


def collect(model: runner.ProgressModel) -> dict[str, HostResult]:
    """Per-host results of the lab_session task (pure; the model watched TASK)."""
    out = {
        h: HostResult(h, r.outcome == "ok", dict(r.res), r.outcome == "unreachable")
        for h, r in model.results.get(TASK, {}).items()
    }
    for h in model.hosts.values():
        if h.unreachable and h.name not in out:
            out[h.name] = HostResult(h.name, False, {"msg": h.message}, unreachable=True)
    return out


def run_module(args: dict[str, Any], *, inventory: str | None, hosts: str) -> dict[str, HostResult]:
    """Run lab_session on ``hosts`` (a pattern) with become; returns per-host results."""
    model = runner.ProgressModel(watch=frozenset({TASK}))
    job = runner.run_playbook(
        runner.command_playbook("session"),
        inventory=inventory,
        extravars={"metalab_target": hosts, "metalab_session": args},
        model=model,
        keep_artifacts=0,  # the token is in the events
    )
    results = collect(model)
    if not results:
        tail = "\n".join(model.messages)[-600:].strip()
        raise click.ClickException(f"no host matched {hosts!r} or the run failed ({job.status}): {tail or 'no output'}")
    return results


def _inventory(flag: str | None) -> str:
    return str(config.require_inventory(flag))


def _fail(results: dict[str, HostResult]) -> None:
    bad = [r for r in results.values() if not r.ok]
    for r in bad:
        click.echo(f"labctl: {r.host}: {r.message}", err=True)
    if bad:
        raise SystemExit(EXIT_REFUSED if all(r.refused for r in bad) else EXIT_FAILED)


def _single(results: dict[str, HostResult]) -> HostResult:
    _fail(results)
    if len(results) != 1:
        raise click.UsageError(f"{len(results)} hosts matched; choose one with --host")
    return next(iter(results.values()))


def _find_host(user: str, inventory: str, host: str | None) -> str:
    """--host, else USER's home host (the lab layout: her runtimes run there and nowhere else)."""
    from metalab.labctl import layout

    return layout.target(user, inventory, host)


def _where_user_runs(user: str, state: str, inventory: str | None, host: str | None) -> HostResult:
    """lab_session with ``state`` for USER on her home host (or --host), once."""
    inv = _inventory(inventory)
    return _single(run_module({"user": user, "state": state}, inventory=inv, hosts=_find_host(user, inv, host)))


INVENTORY_OPTION = click.option(
    "-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY]."
)
HOST_OPTION = click.option("--host", metavar="HOST", help="Lab host (default: USER's home host).")
HOSTS_OPTION = click.option("--host", metavar="HOST", help="Lab hosts (pattern; default: every host).")

SESSION_COLUMNS = [
    output.Column("user"),
    output.Column("host"),
    output.Column("kind"),
    output.Column("gpu"),
    output.Column("state"),
    output.Column("started"),
    output.Column("time_left", "time left", justify="right"),
    output.Column("budget_left", "budget left", justify="right"),
    output.Column("idle_stop", "idle stop"),
]


def _duration(seconds: Any) -> str | None:
    if seconds is None:
        return None
    s = max(0, int(seconds))
    hours, rest = divmod(s, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _clock(iso: Any) -> str | None:
    """An ISO time of the guard ("2024-05-01T17:05:00Z") as "17:05 UTC"."""
    if not isinstance(iso, str) or "T" not in iso:
        return None
    return iso.split("T", 1)[1][:5] + " UTC"


def session_rows(results: dict[str, HostResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results.values():
        for s in r.result.get("sessions", []) if r.ok else []:
            rows.append(
                {
                    "user": s.get("user"),
                    "host": r.host,
                    "kind": s.get("kind"),
                    "gpu": s.get("gpu"),
                    "state": s.get("state"),
                    "started": s.get("started"),
                    "deadline": s.get("deadline"),
                    "time_left": _duration(s.get("time_left_seconds")),
                    "time_left_seconds": s.get("time_left_seconds"),
                    "budget_left": _duration(s.get("budget_left_seconds")),
                    "budget_left_seconds": s.get("budget_left_seconds"),
                    # When the guard stops it if nobody uses it (null: idle culling off, or activity unknown yet).
                    "idle_stop": _clock(s.get("idle_stop_at")),
                    "idle_stop_at": s.get("idle_stop_at"),
                    "session": s.get("session"),
                }
            )
    return sorted(rows, key=lambda row: (str(row["host"]), str(row["user"])))


@click.group("session")
def cli() -> None:
    """Start, stop and list runtimes (one per lab user)."""


@cli.command("start")
@click.argument("user")
@click.option("--gpu", is_flag=True, help="A GPU runtime (the user needs gpu: true, the host a free GPU).")
@HOST_OPTION
@INVENTORY_OPTION
def start_cmd(user: str, gpu: bool, host: str | None, inventory: str | None) -> None:
    """Start USER's runtime on her home host; prints where it is and when it stops."""
    inv = _inventory(inventory)
    where = _find_host(user, inv, host)
    target = _single(run_module({"user": user, "gpu": gpu, "state": "started"}, inventory=inv, hosts=where))
    if not target.result.get("changed"):
        s = target.result.get("session") or {}
        click.echo(f"labctl: {user} already has a {s.get('kind')} runtime on {target.host}; stop it first", err=True)
        raise SystemExit(EXIT_REFUSED)
    s = target.result["session"]
    click.echo(
        f"started a {s.get('kind')} runtime for {user} on {target.host}: https://{target.host}/user/{user}/ "
        f"(stops in {_duration(s.get('time_left_seconds'))}, at {s.get('deadline')}); "
        f"token: labctl session token {user}"
    )


@cli.command("stop")
@click.argument("user")
@HOST_OPTION
@INVENTORY_OPTION
def stop_cmd(user: str, host: str | None, inventory: str | None) -> None:
    """Stop USER's runtime gracefully (files in the home are never touched)."""
    target = _where_user_runs(user, "stopped", inventory, host)
    if target.result.get("changed"):
        click.echo(f"stopped the runtime of {user} on {target.host}")
    else:
        click.echo(f"{user} has no runtime running on {target.host}")


@cli.command("token")
@click.argument("user")
@HOST_OPTION
@INVENTORY_OPTION
def token_cmd(user: str, host: str | None, inventory: str | None) -> None:
    """Print USER's JupyterLab token (kept root-only on the host)."""
    target = _where_user_runs(user, "token", inventory, host)
    click.echo(target.result.get("token", ""))


@cli.command("list")
@HOSTS_OPTION
@INVENTORY_OPTION
@output.output_options()
def list_cmd(host: str | None, inventory: str | None, output: str | None) -> None:  # noqa: A002 - the option's name
    """Runtimes on every lab host: user, host, kind, started, time and budget left."""
    from metalab.labctl import output as out

    fmt = out.resolve_format(output)
    results = run_module({"state": "query"}, inventory=_inventory(inventory), hosts=host or "all")
    rows = session_rows(results)
    out.emit(rows, SESSION_COLUMNS, fmt, title="runtimes")
    _fail(results)


USAGE_COLUMNS = [
    output.Column("user"),
    output.Column("kind"),
    output.Column("hours", justify="right"),
    output.Column("seconds", justify="right"),
    output.Column("sessions", justify="right"),
    output.Column("hosts"),
]


def usage_rows(results: dict[str, HostResult]) -> list[dict[str, Any]]:
    """Sum the hosts' ledgers per user and kind (pure)."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results.values():
        if not r.ok:
            continue
        for u in (r.result.get("usage") or {}).get("usage", []):
            key = (str(u.get("user")), str(u.get("kind")))
            acc = totals.setdefault(key, {"user": key[0], "kind": key[1], "seconds": 0, "sessions": 0, "hosts": []})
            acc["seconds"] += int(u.get("seconds", 0))
            acc["sessions"] += int(u.get("sessions", 0))
            acc["hosts"].append(r.host)
    rows = []
    for key in sorted(totals):
        acc = totals[key]
        acc["hours"] = f"{acc['seconds'] / 3600:.2f}"
        acc["hosts"] = ",".join(sorted(set(acc["hosts"])))
        rows.append(acc)
    return rows


@click.command("usage")
@click.option("--since", metavar="WHEN", help="ISO date/time or a duration back from now (7d); default all time.")
@HOSTS_OPTION
@INVENTORY_OPTION
@output.output_options()
def usage(since: str | None, host: str | None, inventory: str | None, output: str | None) -> None:  # noqa: A002
    """Hours of runtime per user and kind, from the ledgers of all hosts (one fan-out)."""
    from metalab.labctl import output as out

    fmt = out.resolve_format(output)
    args: dict[str, Any] = {"state": "usage"}
    if since:
        args["since"] = since
    results = run_module(args, inventory=_inventory(inventory), hosts=host or "all")
    out.emit(usage_rows(results), USAGE_COLUMNS, fmt, title=f"usage since {since}" if since else "usage")
    _fail(results)
