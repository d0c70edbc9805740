"""`labctl users requests|approve|deny|reset`: answer the portal's sign-up requests (issue 19).

The requests live on the lab host (the broker's requests.json); labctl reads and answers them with metalab-broker
there (playbooks/labctl/signup.yml, which hands the broker the inventory's ``lab_smtp`` so mail goes out from the
lab). ``approve`` adds her to the inventory's lab_users (comments kept, with her ``email``), provisions her (what
``labctl users add --apply`` runs), then makes her enrollment link, marks the request approved and mails the link
when lab_smtp is set (otherwise prints it). Every check comes before the first change; an approve that stopped after
the inventory edit (say, a failed provisioning run) can simply be run again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import click

from metalab.labctl import config, layout, output
from metalab.labctl.inventory import (
    UsersError,
    _move_trailing_comment,
    _new_entry,
    _validator_settings,
    commit,
    locate,
    plain,
    validate,
)
from metalab.labctl.users import (
    APPLY_TAGS,
    HOST_OPTION,
    INVENTORY_OPTION,
    PLAIN_OPTION,
    BrokerResult,
    _rel,
    broker_playbook,
)
from metalab.labctl.users import cli as users_cli


def run_signup(args: list[str], *, inventory: str, host: str | None) -> BrokerResult:
    """``metalab-broker ARGS`` as root on the (one) lab host, lab_smtp on its stdin (playbooks/labctl/signup.yml)."""
    extravars = {"metalab_target": host or "all", "metalab_broker_args": args}
    results = broker_playbook("signup", inventory, extravars)
    return next(iter(results.values()))


# Replaced by the tests (a broker on temporary files); labctl uses the playbook.
HOST_CALL: Callable[..., BrokerResult] = run_signup


def call_json(args: list[str], inventory: str, host: str | None) -> tuple[Any, str]:
    result = HOST_CALL(args, inventory=inventory, host=host)
    if result.rc != 0:
        message = result.stderr.strip().removeprefix("metalab-broker: ") or result.stdout.strip()
        raise UsersError(f"{result.host}: {message or f'metalab-broker exited with {result.rc}'}")
    try:
        return json.loads(result.stdout), result.host
    except json.JSONDecodeError:
        raise UsersError(f"{result.host}: unexpected answer from metalab-broker: {result.stdout[:200]!r}") from None


def pending_request(name: str, inventory: str, host: str | None) -> dict[str, Any]:
    rows, where = call_json(["requests", "--json"], inventory, host)
    for row in rows:
        if row.get("name") == name:
            return dict(row)
    raise UsersError(f"{where}: no pending sign-up request for {name!r} (see `labctl users requests`); nothing changed")


def add_with_email(
    inventory: Path, name: str, quota: str | None, gpu: bool, email: str, home: str | None = None
) -> tuple[Any, bool]:
    """Add NAME (with her e-mail and, in a lab of several hosts, her home host) to lab_users, comments kept;
    (document, added). An entry that approve wrote before (same name and e-mail, present) is kept as it is:
    approve is run again after a failed provisioning."""
    doc = locate(inventory)
    users = list(doc.users) if doc.users is not None else []
    same = [u for u in users if isinstance(u, Mapping) and u.get("name") == name]
    if same and same[0].get("email") == email and same[0].get("state", "present") == "present":
        return doc, False
    # In a lab of several hosts she gets a home host as `users add` gives one (most quota headroom).
    try:
        (placed,), notes = layout.home_hosts_for(inventory, [(name, quota, gpu, home)])
    except layout.LayoutError as exc:  # approve's --host names where the requests are; her home host is --home
        raise UsersError(str(exc).replace("give --host", "give --home HOST")) from None
    for note in notes:
        click.echo(f"placed {note}", err=True)
    like = users[-1] if users else None
    entry = _new_entry(name, quota, gpu, like, placed[3])
    entry["email"] = email
    errors = validate(plain(users + [entry]) or [], **_validator_settings(doc))
    if errors:
        raise UsersError(f"{doc.path}: " + "; ".join(errors) + " (nothing written)")
    seq = doc.ensure_users()
    if len(seq):
        _move_trailing_comment(seq[-1], entry)
    seq.append(entry)
    commit(doc, seq)
    return doc, True


def provision(inventory: Path, plain_output: bool) -> int:
    from metalab.labctl import provision as prov

    return prov.run_and_report("site", inventory=str(inventory), tags=APPLY_TAGS, plain=plain_output)


REQUEST_COLUMNS = [
    output.Column("name"),
    output.Column("email"),
    output.Column("requested"),
    output.Column("status", styled=True),
    output.Column("reason"),
]


def register(users: click.Group) -> None:
    """Add the commands to the `labctl users` group."""

    @users.command("requests")
    @click.option("--all", "everything", is_flag=True, help="Also approved and denied requests.")
    @HOST_OPTION
    @INVENTORY_OPTION
    @output.output_options()
    def requests_cmd(everything: bool, host: str | None, inventory: str | None, output: str | None) -> None:  # noqa: A002
        """List the portal's sign-up requests (pending ones; --all: every one)."""
        from metalab.labctl import output as out

        inv = str(config.require_inventory(inventory))
        rows, where = call_json(["requests", "--json"] + (["--all"] if everything else []), inv, host)
        keep = ("name", "email", "requested", "status", "reason")
        out.emit([{k: r.get(k) for k in keep} for r in rows], REQUEST_COLUMNS, out.resolve_format(output),
                 title=f"sign-up requests on {where}")  # fmt: skip

    @users.command("approve")
    @click.argument("name")
    @click.option(
        "--quota", metavar="SIZE", help="Hard limit of her home, e.g. 15G (default: lab_users_default_quota)."
    )
    @click.option("--gpu", is_flag=True, help="May start GPU runtimes.")
    @click.option(
        "--home",
        metavar="HOST",
        help="Her home host in a lab of several hosts (default: placed as `users add` does, most quota headroom).",
    )
    @HOST_OPTION
    @INVENTORY_OPTION
    @PLAIN_OPTION
    @click.option("--json", "as_json", is_flag=True, help="Print {user, email, url, expires, mailed} as JSON.")
    def approve_cmd(
        name: str,
        quota: str | None,
        gpu: bool,
        home: str | None,
        host: str | None,
        inventory: str | None,
        plain: bool,
        as_json: bool,
    ) -> None:
        """Approve NAME's sign-up request: add her to lab_users, provision her, mail (or print) her enrollment link."""
        inv = config.require_inventory(inventory)
        request = pending_request(name, str(inv), host)
        doc, added = add_with_email(inv, name, quota, gpu, str(request.get("email", "")), home)
        if added:
            click.echo(f"added {name} <{request.get('email')}> to lab_users in {_rel(doc.path)}", err=True)
        else:
            click.echo(f"{name} is in lab_users already (an earlier approve); provisioning again", err=True)
        code = provision(inv, plain)
        if code != 0:
            raise UsersError(
                f"provisioning failed (exit {code}); the request stays pending: fix it, then run approve again"
            )
        info, where = call_json(["signup-approve", name], str(inv), host)
        info["host"] = where
        if as_json:
            click.echo(json.dumps(info, sort_keys=True))
            return
        if info.get("mailed"):
            click.echo(f"approved {name}: her enrollment link went to {info['email']} (valid until {info['expires']})")
            return
        if info.get("mail_error"):
            click.echo(f"labctl: the mail to {info['email']} failed: {info['mail_error']}", err=True)
        click.echo(f"approved {name}; give her this enrollment link (single use, valid until {info['expires']}):")
        click.echo(info["url"])

    @users.command("deny")
    @click.argument("name")
    @click.option("--reason", default="", help="Why (goes into her mail when lab_smtp is set).")
    @HOST_OPTION
    @INVENTORY_OPTION
    def deny_cmd(name: str, reason: str, host: str | None, inventory: str | None) -> None:
        """Deny NAME's sign-up request (she is told by mail when lab_smtp is set)."""
        inv = str(config.require_inventory(inventory))
        info, where = call_json(["signup-deny", name, "--reason", reason], inv, host)
        told = f"; mailed {info['email']}" if info.get("mailed") else ""
        click.echo(f"denied the request of {name} on {where}{told}")
        if info.get("mail_error"):
            click.echo(f"labctl: the mail to {info['email']} failed: {info['mail_error']}", err=True)

    @users.command("reset")
    @click.argument("name")
    @HOST_OPTION
    @INVENTORY_OPTION
    @click.option("--json", "as_json", is_flag=True, help="Print {user, url, expires, mailed} as JSON.")
    def reset_cmd(name: str, host: str | None, inventory: str | None, as_json: bool) -> None:
        """Reset NAME's portal password: the old one stops working at once, her sessions end, and she sets a new one
        with a fresh enrollment link (mailed to her inventory e-mail when lab_smtp is set, else printed)."""
        inv = config.require_inventory(inventory)
        doc = locate(inv)
        entry = next((u for u in plain(doc.users) or [] if isinstance(u, dict) and u.get("name") == name), None)
        if entry is None:
            raise UsersError(f"{doc.path}: no lab user named {name!r}; nothing changed")
        email = entry.get("email") or ""
        info, where = call_json(["reset", name] + (["--email", email] if email else []), str(inv), host)
        if as_json:
            click.echo(json.dumps(dict(info, host=where), sort_keys=True))
        elif info.get("mailed"):
            click.echo(f"reset the password of {name}: her old one no longer works; the link went to {email}")
        else:
            if info.get("mail_error"):
                click.echo(f"labctl: the mail to {email} failed: {info['mail_error']}", err=True)
            click.echo(f"reset the password of {name}: her old one no longer works; give her this link:")
            click.echo(info["url"])


# `labctl users` is this group: metalab.labctl.users' commands and these (metalab.labctl.cli names this module).
register(users_cli)
cli = users_cli
