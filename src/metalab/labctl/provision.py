"""`labctl provision`: run a playbook of the collection with live per-host progress and a trustworthy exit code."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from metalab.labctl import config, display, runner


def run_and_report(
    playbook: str = "site",
    *,
    inventory: str | None = None,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    check: bool = False,
    plain: bool = False,
    mitogen: bool | None = None,
) -> int:
    """Run ``playbook``, show progress and the summary; return the exit code (see metalab.labctl.runner).

    ``mitogen``: run with Mitogen for Ansible; None = the labctl setting (METALAB_MITOGEN, config file; off).
    """
    from rich.console import Console
    from rich.live import Live

    console = Console()
    plain = plain or not console.is_terminal
    model = runner.ProgressModel()

    def plain_event(event: dict[str, Any]) -> None:
        line = display.plain_line(event)
        if line is not None:
            click.echo(line)

    try:
        runner.playbook_path(playbook)
    except (FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    use_mitogen = config.mitogen(mitogen)
    if use_mitogen:
        try:
            runner.mitogen_env()  # fail before anything runs, naming the fix
        except runner.MitogenNotInstalled as exc:
            raise click.ClickException(str(exc)) from exc
    mode = " (check mode: nothing changes)" if check else ""
    mode += " with Mitogen" if use_mitogen else ""
    where = f" on {limit}" if limit else ""
    started = time.monotonic()

    def run(on_event: Callable[[dict[str, Any]], None] | None) -> runner.RunResult:
        return runner.run_playbook(
            playbook, inventory=inventory, limit=limit, tags=tags, skip_tags=skip_tags, check=check,
            model=model, on_event=on_event, mitogen=use_mitogen,
        )  # fmt: skip

    if plain:
        click.echo(f"labctl: running {playbook}{where}{mode}")
        result = run(plain_event)
    else:
        console.print(f"[bold]labctl[/]: running {playbook}{where}{mode}")
        with Live(get_renderable=lambda: display.progress_table(model), console=console, refresh_per_second=4):
            result = run(None)
    code = result.exit_code
    if not model.finished:
        message = f"the run ended without a recap (ansible-runner status {result.status}, rc {result.rc})"
        if plain:
            click.echo("\n".join(model.messages), err=True)
            click.echo(f"labctl: {message}", err=True)
        else:
            console.print("\n".join(model.messages), markup=False, highlight=False)
            console.print(f"[red]labctl[/]: {message}")
    if model.hosts:
        if plain:
            click.echo("\n".join(display.summary_lines(model)))
        else:
            console.print(display.summary_table(model))
    verdict = {
        runner.EXIT_OK: "all hosts ok",
        runner.EXIT_FAILED: "some hosts failed",
        runner.EXIT_UNREACHABLE: "some hosts were unreachable",
        runner.EXIT_ERROR: "the run did not complete",
    }[code]
    elapsed = display.format_duration(time.monotonic() - started)
    if plain:
        click.echo(f"artifacts: {result.artifacts}")
        click.echo(f"result: {verdict} in {elapsed} (exit {code})")
    else:
        console.print(f"artifacts: {result.artifacts}", highlight=False)
        colour = "green" if code == runner.EXIT_OK else "red"
        console.print(f"[{colour}]{verdict}[/] in {elapsed} (exit {code})")
    return code


@click.command("provision")
@click.option("-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY].")
@click.option("--limit", metavar="HOSTS", help="Only these hosts or groups (Ansible --limit pattern).")
@click.option("--tags", metavar="TAGS", help="Only tasks with these tags (comma-separated).")
@click.option("--skip-tags", metavar="TAGS", help="Skip tasks with these tags (comma-separated), e.g. runtimes.")
@click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing.")
@click.option("--plain", is_flag=True, help="Line output instead of the live table (automatic when not a terminal).")
@click.option("--playbook", default="site", show_default=True, help="Playbook of the collection to run.")
@click.option(
    "--mitogen/--no-mitogen",
    default=None,
    help="Run with Mitogen for Ansible (optional extra: pip install 'metalab[mitogen]') [env: METALAB_MITOGEN].",
)
def cli(
    inventory: str | None,
    limit: str | None,
    tags: str | None,
    skip_tags: str | None,
    check: bool,
    plain: bool,
    playbook: str,
    mitogen: bool | None,
) -> None:
    """Provision the lab: run a playbook of metalab.lab on the inventory's hosts.

    \b
    Exit codes:
      0  every host ok (changes are ok)
      1  the run did not complete (inventory or syntax error, interrupted)
      2  a task failed on at least one host
      3  no failure, but at least one host was unreachable
    """
    sys.exit(
        run_and_report(
            playbook,
            inventory=config.inventory(inventory),
            limit=limit,
            tags=tags,
            skip_tags=skip_tags,
            check=check,
            plain=plain,
            mitogen=mitogen,
        )
    )
