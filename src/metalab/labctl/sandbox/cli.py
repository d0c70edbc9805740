"""`labctl sandbox`: throwaway lab hosts (docs/labctl.md, "sandbox")."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from metalab.labctl.sandbox import inventory, labnet, nspawn, state, validate, vm
from metalab.labctl.sandbox.errors import SandboxError

_DRIVERS = {"nspawn": nspawn, "vm": vm}


def _fail(error: Exception) -> None:
    click.echo(f"labctl sandbox: {error}", err=True)
    sys.exit(2)


def _is_up(record: dict[str, Any]) -> bool:
    return bool(_DRIVERS[record["kind"]].is_up(record))


@click.group()
def cli() -> None:
    """Throwaway lab hosts: nspawn containers or qemu VMs with NVMe disks."""


@cli.command()
@click.argument("name")
@click.option("--vm", "use_vm", is_flag=True, help="A qemu VM (real kernel, NVMe, quotas) instead of nspawn.")
@click.option("--kind", "kind", default=None, help="nspawn or vm (same as --vm).")
@click.option("--nvme-size", "nvme_sizes", multiple=True, help="Add an NVMe disk of this size (vm only; repeatable).")
@click.option(
    "--boot-timeout",
    type=click.IntRange(1, 3600),
    default=None,
    help="Seconds to wait for its SSH to answer (default 120 nspawn, 480 vm); a sandbox that misses it is removed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the sandbox as one JSON object.")
def up(
    name: str, use_vm: bool, kind: str | None, nvme_sizes: tuple[str, ...], boot_timeout: int | None, as_json: bool
) -> None:
    """Create and boot sandbox NAME (does nothing when it is already up)."""
    try:
        validate.name(name)
        chosen = validate.kind(kind or ("vm" if use_vm else "nspawn"))
        if use_vm and chosen != "vm":
            raise SandboxError("--vm and --kind nspawn contradict each other")
        sizes = [validate.size(s) for s in nvme_sizes]
        if sizes and chosen != "vm":
            raise SandboxError("--nvme-size needs a vm sandbox (--vm): nspawn hosts have no disks of their own")
        if chosen == "vm" and not sizes:
            sizes = [validate.size("4G")]
        validate.require_root()
        validate.require_tools(chosen)
        record = state.load(name)
        if record is not None and record.get("kind") != chosen:
            raise SandboxError(f"sandbox {name!r} is already up as a {record.get('kind')} sandbox: take it down first")
        if record is not None and not _is_up(record):
            _DRIVERS[chosen].down(name)
            record = None
        if record is None:
            if chosen == "nspawn":
                record = nspawn.up(name, boot_timeout or nspawn.BOOT_TIMEOUT)
            else:
                record = vm.up(name, sizes, boot_timeout or vm.BOOT_TIMEOUT)
    except SandboxError as error:
        _fail(error)
        return
    if as_json:
        click.echo(json.dumps(state.public(record)))
    else:
        click.echo(
            f"sandbox {name} is up ({record['kind']}): ssh -i {record['ansible_ssh_private_key_file']} "
            f"-p {record['ansible_port']} {record['ansible_user']}@{record['ansible_host']}"
        )


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Take down every sandbox.")
def down(names: tuple[str, ...], everything: bool) -> None:
    """Take down sandboxes and remove everything they made."""
    try:
        validate.require_root()
        targets = [r["name"] for r in state.all_records()] if everything else [validate.name(n) for n in names]
        if not targets and not everything:
            raise SandboxError("name a sandbox to take down, or use --all")
        for name in targets:
            record = state.load(name)
            driver = _DRIVERS[record["kind"]] if record else nspawn
            driver.down(name)
            if record is None and not everything:
                click.echo(f"sandbox {name} was not up; cleaned any leftovers", err=True)
        if everything:
            labnet.detach(None)  # a lab network left by a sandbox whose record is gone
    except SandboxError as error:
        _fail(error)


@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Show the sandboxes that exist."""
    rows = [dict(state.public(r), state="up" if _is_up(r) else "down") for r in state.all_records()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("name", "kind", "state", "ssh")
    for row in rows:
        table.add_row(row["name"], row["kind"], row["state"], f"{row.get('ansible_host')}:{row.get('ansible_port')}")
    Console().print(table)


@cli.command("inventory")
@click.argument("names", nargs=-1)
def inventory_(names: tuple[str, ...]) -> None:
    """Print an Ansible YAML inventory for the named sandboxes (default: all that are up)."""
    try:
        records = [r for r in state.all_records() if _is_up(r)]
        if names:
            wanted = [validate.name(n) for n in names]
            known = {r["name"] for r in records}
            missing = [n for n in wanted if n not in known]
            if missing:
                raise SandboxError(f"no sandbox up named {', '.join(missing)}: see 'labctl sandbox list'")
            records = [r for r in records if r["name"] in wanted]
    except SandboxError as error:
        _fail(error)
        return
    click.echo(inventory.render(records, inventory.extra_ca_certificates()), nl=False)
