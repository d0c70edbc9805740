"""`labctl users`: add, remove and list the inventory's ``lab_users`` (edited by metalab.labctl.inventory), and
set portal passwords or print enrollment links through metalab-broker on the lab hosts (playbooks/labctl/broker.yml).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from metalab.labctl import config, layout, output, runner
from metalab.labctl.backup import restore_cmd as backup_restore_cmd
from metalab.labctl.inventory import UsersError, add_users, locate, plain, remove_user, set_user
from metalab.labctl.move import cli as move_cmd

TRUE = {"true", "yes", "y", "1", "on"}
FALSE = {"false", "no", "n", "0", "off", ""}


def read_roster(path: Path) -> list[tuple[str, str | None, bool, str | None]]:
    """A class roster: CSV with a header row, columns name (required), quota, gpu, host (her home host)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsersError(f"{path}: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "name" not in columns:
        raise UsersError(f"{path}: the first row must name the columns: name,quota,gpu")
    unknown = sorted(set(columns) - {"name", "quota", "gpu", "host"})
    if unknown:
        raise UsersError(f"{path}: unknown column(s) {', '.join(unknown)} (allowed: name, quota, gpu, host)")
    rows = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        gpu = row.get("gpu", "").lower()
        if gpu not in TRUE | FALSE:
            raise UsersError(f"{path}:{line}: gpu must be true or false, got {row.get('gpu')!r} (nothing written)")
        rows.append((row["name"], row.get("quota") or None, gpu in TRUE, row.get("host") or None))
    if not rows:
        raise UsersError(f"{path}: no users in the roster")
    return rows


# What --apply runs: lab_users, plus what it and the runtime side need in the same play. storage publishes the
# homes volume (without it quotas are unknown and a quota'd lab fails the preflight); the front door (a location per
# user) and the guard (its user list) must learn about the user, and session_limits reads facts of container_engine
# and runtime_image. All idempotent: on a converged host only the user's part changes. (The portal keeps no per-user
# state besides its admins, which the next full run checks.)
APPLY_TAGS = "storage,lab_users,container_engine,runtime_image,frontdoor,session_limits"


def _apply(inventory: Path, plain_output: bool) -> None:
    from metalab.labctl import provision

    raise SystemExit(provision.run_and_report("site", inventory=str(inventory), tags=APPLY_TAGS, plain=plain_output))


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


INVENTORY_OPTION = click.option(
    "-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY]."
)
APPLY_OPTION = click.option(
    "--apply", is_flag=True, help=f"Then run the site playbook with --tags {APPLY_TAGS} (the users' part of the lab)."
)
PLAIN_OPTION = click.option("--plain", is_flag=True, help="With --apply: line output instead of the live table.")


@click.group("users")
def cli() -> None:
    """Add, remove and list lab users (the inventory's lab_users)."""


@cli.command("add")
@click.argument("name", required=False)
@click.option("--quota", metavar="SIZE", help="Hard limit of the home, e.g. 15G (default: lab_users_default_quota).")
@click.option("--gpu", is_flag=True, help="May start GPU runtimes.")
@click.option(
    "--csv", "roster", type=click.Path(path_type=Path), help="Add every row of a roster (name,quota,gpu[,host])."
)
@click.option(
    "--host",
    metavar="HOST",
    help="Her home host (a lab host). Default in a lab of several hosts: the one with the most quota headroom that "
    "can run what she may start (a host of gpu_hosts with --gpu).",
)
@INVENTORY_OPTION
@APPLY_OPTION
@PLAIN_OPTION
def add_cmd(
    name: str | None,
    quota: str | None,
    gpu: bool,
    roster: Path | None,
    host: str | None,
    inventory: str | None,
    apply: bool,
    plain: bool,
) -> None:
    """Add lab user NAME, or every user of a class roster (--csv); in a lab of several hosts, on a home host."""
    if bool(name) == bool(roster):
        raise click.UsageError("give either NAME or --csv ROSTER")
    if roster and (quota or gpu or host):
        raise click.UsageError("--quota, --gpu and --host go in the roster's columns with --csv")
    inv = config.require_inventory(inventory)
    entries = read_roster(roster) if roster else [(str(name), quota, gpu, host)]
    entries, notes = layout.home_hosts_for(inv, entries)
    for note in notes:
        click.echo(f"placed {note}")
    doc = add_users(inv, entries)
    names = ", ".join(e[0] for e in entries)
    click.echo(f"added {names} to lab_users in {_rel(doc.path)}")
    if apply:
        _apply(inv, plain)
    click.echo(f"run `labctl provision --tags {APPLY_TAGS}` (or add --apply) to create the accounts")


@cli.command("remove")
@click.argument("name")
@INVENTORY_OPTION
@APPLY_OPTION
@PLAIN_OPTION
def remove_cmd(name: str, inventory: str | None, apply: bool, plain: bool) -> None:
    """Mark lab user NAME absent: the next run archives the home, then removes the account."""
    inv = config.require_inventory(inventory)
    doc, changed = remove_user(inv, name)
    if changed:
        click.echo(f"{name} set to state: absent in {_rel(doc.path)}")
    else:
        click.echo(f"{name} is already absent in {_rel(doc.path)}")
    if apply:
        _apply(inv, plain)


LIST_COLUMNS = [
    output.Column("name"),
    output.Column("quota"),
    output.Column("gpu"),
    output.Column("state", styled=True),
]


def user_rows(users: Any) -> list[dict[str, Any]]:
    rows = []
    for entry in plain(list(users or [])) or []:
        if not isinstance(entry, dict):
            continue
        rows.append(
            {
                "name": entry.get("name"),
                "quota": entry.get("quota"),  # None: lab_users_default_quota applies
                "gpu": bool(entry.get("gpu", False)),
                "state": entry.get("state", "present"),
            }
        )
    return rows


USAGE_COLUMNS = [*LIST_COLUMNS, output.Column("host"), output.Column("home"), output.Column("hours_7d", "hours (7d)")]


@cli.command("list")
@click.option("--usage", is_flag=True, help="Also each user's home used/quota and runtime hours of the last 7 days.")
@click.option("--host", metavar="HOST", help="With --usage: ask only these lab hosts (pattern).")
@INVENTORY_OPTION
@output.output_options()
def list_cmd(usage: bool, host: str | None, inventory: str | None, output: str | None) -> None:  # noqa: A002
    """List the inventory's lab users (--usage: with what they use, read on the lab hosts)."""
    from metalab.labctl import output as out
    from metalab.labctl import userusage as usage_mod

    fmt = out.resolve_format(output)
    inv = config.require_inventory(inventory)
    doc = locate(inv)
    rows = user_rows(doc.users)
    columns = LIST_COLUMNS
    if usage:
        rows = usage_mod.merge(rows, usage_mod.fetch(str(inv), host))
        columns = USAGE_COLUMNS
    if fmt == "table":
        for row in rows:
            row["quota"] = row["quota"] or "(default)"
        if usage:
            rows = [usage_mod.for_table(row) for row in rows]
    out.emit(
        rows,
        columns if fmt == "table" or not usage else _usage_columns(rows),
        fmt,
        title=f"lab_users in {_rel(doc.path)}",
    )


def _usage_columns(rows: list[dict[str, Any]]) -> list[output.Column]:
    keys = list(rows[0]) if rows else [c.key for c in LIST_COLUMNS]
    return [output.Column(k) for k in keys]


@cli.command("set")
@click.argument("name")
@click.option("--quota", metavar="SIZE", help="New hard limit of the home, e.g. 20G.")
@click.option("--gpu/--no-gpu", default=None, help="May (or may no longer) start GPU runtimes.")
@INVENTORY_OPTION
@APPLY_OPTION
@PLAIN_OPTION
def set_cmd(name: str, quota: str | None, gpu: bool | None, inventory: str | None, apply: bool, plain: bool) -> None:
    """Change lab user NAME's entry (comments kept; the whole list is checked before the file is written)."""
    if quota is None and gpu is None:
        raise click.UsageError("nothing to change: give --quota SIZE and/or --gpu/--no-gpu")
    inv = config.require_inventory(inventory)
    if gpu:
        layout.check_gpu_home(inv, name)
    doc, changed = set_user(inv, name, quota, gpu)
    if changed:
        click.echo(f"{name}: {', '.join(changed)} in {_rel(doc.path)}")
    else:
        click.echo(f"{name} already has that in {_rel(doc.path)}")
    if apply:
        _apply(inv, plain)
    elif changed:
        click.echo(f"run `labctl provision --tags {APPLY_TAGS}` (or add --apply) to apply it on the lab hosts")


# --- portal passwords and enrollment links (metalab-broker on the lab hosts) ---------------------------------

REPORT_TASK = "Report"  # the task of playbooks/labctl/broker.yml whose results labctl reads


@dataclass
class BrokerResult:
    host: str
    rc: int
    stdout: str = ""
    stderr: str = ""


def broker_results(model: runner.ProgressModel) -> tuple[dict[str, BrokerResult], list[str]]:
    """Per-host results of the ``Report`` task, and the messages of hosts that failed before it (pure)."""
    results: dict[str, BrokerResult] = {}
    for host, result in model.results.get(REPORT_TASK, {}).items():
        msg = result.res.get("msg") or {}
        if result.outcome == "ok" and isinstance(msg, dict):
            rc, out, err = int(msg.get("rc", 1)), str(msg.get("stdout", "")), str(msg.get("stderr", ""))
            results[host] = BrokerResult(host, rc, out, err)
    errors = [f"{h.name}: {h.message or 'failed'}" for h in model.hosts.values() if h.failed or h.unreachable]
    return results, errors


def run_broker(
    args: list[str],
    *,
    inventory: str,
    hosts: str,
    stdin: str | None = None,
    single_host: bool = False,
    base_url: str | None = None,
    wants_base_url: bool = False,
) -> dict[str, BrokerResult]:
    """``metalab-broker ARGS`` as root on ``hosts``; ``stdin`` reaches it through a file that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="labctl-broker.") as private:  # 0700; holds the password file
        stdin_file = ""
        if stdin is not None:
            stdin_file = os.path.join(private, "stdin")
            fd = os.open(stdin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(stdin)
        extravars: dict[str, Any] = {
            "metalab_target": hosts,
            "metalab_broker_args": args,
            "metalab_stdin_file": stdin_file,
            "metalab_single_host": single_host,
            "metalab_wants_base_url": wants_base_url,
        }
        if base_url:
            extravars["metalab_base_url"] = base_url
        return broker_playbook("broker", inventory, extravars)


def broker_playbook(playbook: str, inventory: str, extravars: dict[str, Any]) -> dict[str, BrokerResult]:
    """Run playbooks/labctl/PLAYBOOK.yml (it reports metalab-broker's result per host in REPORT_TASK); the results,
    each host's failure said on stderr; UsersError when no host ran it."""
    model = runner.ProgressModel(watch=frozenset({REPORT_TASK}))
    job = runner.run_playbook(
        runner.command_playbook(playbook), inventory=inventory, extravars=extravars, model=model, keep_artifacts=0
    )
    results, errors = broker_results(model)
    for error in errors:
        click.echo(f"labctl: {error}", err=True)
    if not results:
        hosts = extravars.get("metalab_target")
        raise UsersError(f"metalab-broker did not run on {hosts!r} ({job.status}); see the messages above")
    return results


def _broker_exit(results: dict[str, BrokerResult]) -> None:
    bad = [r for r in results.values() if r.rc != 0]
    for r in bad:
        click.echo(f"labctl: {r.host}: {r.stderr.strip() or r.stdout.strip() or f'exit {r.rc}'}", err=True)
    if bad:
        raise SystemExit(2 if all(r.rc == 2 for r in bad) else 1)


HOST_OPTION = click.option("--host", metavar="HOST", help="Lab host (pattern); default: every host of the inventory.")
# Commands about one user act on her home host (metalab.labctl.layout), once.
USER_HOST_OPTION = click.option("--host", metavar="HOST", help="Lab host; default: NAME's home host.")


@cli.command("passwd")
@click.argument("name")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of stdin.")
@USER_HOST_OPTION
@INVENTORY_OPTION
def passwd_cmd(name: str, from_stdin: bool, host: str | None, inventory: str | None) -> None:
    """Set lab user NAME's portal password (metalab-broker passwd on the lab hosts; ends NAME's portal sessions)."""
    if from_stdin:
        import sys

        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("new portal password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("empty password; nothing changed")
    inv = str(config.require_inventory(inventory))
    where = layout.target(name, inv, host)
    results = run_broker(["passwd", name, "--stdin"], inventory=inv, hosts=where, stdin=password + "\n")
    _broker_exit(results)
    click.echo(f"portal password of {name} set on {', '.join(sorted(results))}")


@cli.command("enroll")
@click.argument("name")
@click.option("--ttl", metavar="DURATION", help="How long the link is valid (default: the broker's, 72h).")
@click.option("--base-url", metavar="URL", help="The portal's URL (default: https://<the host's address>).")
@click.option("--json", "as_json", is_flag=True, help="Print {user, url, expires} as JSON.")
@USER_HOST_OPTION
@INVENTORY_OPTION
def enroll_cmd(
    name: str, ttl: str | None, base_url: str | None, as_json: bool, host: str | None, inventory: str | None
) -> None:
    """Print a one-time link with which lab user NAME sets a portal password (single use; a new one replaces it)."""
    inv = str(config.require_inventory(inventory))
    args = ["enroll", name, "--json"] + (["--ttl", ttl] if ttl else [])
    where = layout.target(name, inv, host)
    results = run_broker(args, inventory=inv, hosts=where, single_host=True, base_url=base_url, wants_base_url=True)
    _broker_exit(results)
    result = next(iter(results.values()))
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise UsersError(f"{result.host}: unexpected answer from metalab-broker: {result.stdout[:200]!r}") from None
    info = {"user": info.get("user", name), "url": info.get("url"), "expires": info.get("expires"), "host": result.host}
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        click.echo(info["url"])
        click.echo(f"(single use, valid until {info['expires']}; host {result.host})", err=True)


# `labctl users restore`: from the lab hosts' backups (metalab.labctl.backup runs metalab-backup there).
cli.add_command(backup_restore_cmd)
# `labctl users move`: a home to another lab host (metalab.labctl.move).
cli.add_command(move_cmd)
