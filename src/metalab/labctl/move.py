"""`labctl users move NAME --to HOST [--stop]`: move a lab user's home (and her guard ledger rows) to another lab
host, then point ``lab_users[].host`` at it (playbooks/labctl/move.yml, host side metalab-homes).

Steps, each said in the output: 1 probe (read-only: both hosts, her runtime, the target's quota headroom; every
refusal comes here, before anything changes), 2 copy (the old host archives the home under /var/lib/metalab/moved,
the controller relays it, the new host imports it and verifies every file's checksum, then takes her ledger rows),
3 retire (the old host checks the archive's checksums, then removes her ledger rows, account and home; the archive
and its manifest stay), 4 the inventory. A marker /var/lib/metalab/moved/NAME.moving.json on the old host names
the move, so a rerun after an interruption finishes it with the same archive.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from metalab import rules
from metalab.labctl import config, layout, runner
from metalab.labctl.inventory import UsersError, _validator_settings, locate, plain, write_atomically

REPORT_TASK = "Report {phase}"  # the task of playbooks/labctl/move.yml whose results labctl reads


class MoveRefused(click.ClickException):
    exit_code = 3


@dataclass
class HostProbe:
    host: str
    account: list[str] | None  # getent passwd fields, None: no account
    runtimes: list[dict[str, Any]] | None  # None: the guard did not answer
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def tool(self) -> bool:
        return self.facts.get("tool") == "yes"

    def number(self, key: str) -> int | None:
        value = self.facts.get(key, "")
        return int(value) if value.isdigit() else None

    @property
    def marker(self) -> dict[str, Any] | None:
        """The move under way from this host (NAME.moving.json), if any."""
        return self._json("marker")

    @property
    def moved(self) -> dict[str, Any] | None:
        """The last finished move from this host (NAME.moved.json), if any."""
        return self._json("moved")

    def _json(self, key: str) -> dict[str, Any] | None:
        text = self.facts.get(key)
        if not text:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def runs(self, user: str) -> bool:
        return any(r.get("user") == user for r in self.runtimes or [])


def parse_probe(host: str, msg: Mapping[str, Any]) -> HostProbe:
    account = str(msg.get("account") or "").strip()
    runtimes: list[dict[str, Any]] | None = None
    if str(msg.get("runtimes_rc")) == "0":
        try:
            loaded = json.loads(str(msg.get("runtimes") or "[]"))
            runtimes = [r for r in loaded if isinstance(r, dict)] if isinstance(loaded, list) else None
        except json.JSONDecodeError:
            runtimes = None
    facts = {}
    for line in str(msg.get("probe") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return HostProbe(host, account.split(":") if account else None, runtimes, facts)


def _settings(doc: Any) -> dict[str, Any]:
    settings = _validator_settings(doc)
    holder = doc.holder
    if isinstance(holder, Mapping) and holder.get("lab_homes_root"):
        settings["homes_root"] = str(plain(holder["lab_homes_root"]))
    return settings


def normalised(doc: Any, name: str) -> tuple[Any, dict[str, Any]]:
    users = doc.users or []
    entry = next((u for u in users if isinstance(u, Mapping) and u.get("name") == name), None)
    if entry is None or entry.get("state", "present") == "absent":
        raise MoveRefused(f"{doc.path}: no present lab user named {name!r} (nothing changed)")
    result = rules.validate_users(plain([entry]), **_settings(doc))
    if result["errors"]:
        raise MoveRefused(f"{doc.path}: " + "; ".join(map(str, result["errors"])) + " (nothing changed)")
    return entry, result["users"][0]


def headroom(doc: Any, target: str, name: str, hosts: list[str], volume_size: int) -> int:
    """The target's homes volume minus the quotas of the users homed there (her own left out): layout.headroom."""
    result = rules.validate_users(plain(list(doc.users or [])), **_settings(doc))
    others = [u for u in rules.with_home_hosts(result["users"], hosts) if u["name"] != name]
    return layout.headroom(others, [target], {target: volume_size})[target]


def check(
    user: dict[str, Any], source: HostProbe, target: HostProbe, stop: bool, headroom_bytes: int | None, to: str
) -> list[str]:
    """Every reason not to start (pure): empty when the move may go on."""
    problems = []
    name = user["name"]
    for probe in (source, target):
        if not probe.tool:
            problems.append(
                f"{probe.host}: metalab-homes is not installed (run `labctl provision --tags session_limits`)"
            )
        if probe.runtimes is None:
            problems.append(f"{probe.host}: metalab-guard did not answer (is the session_limits role applied?)")
    marker = source.marker
    if marker and marker.get("target") != to:
        problems.append(f"{source.host}: a move of {name} to {marker.get('target')} is under way; finish it first")
    if source.account is None and not marker and (source.moved or {}).get("target") != to:
        problems.append(f"{source.host}: {name} has no account ({user['login']}) there to move")
    # No account of hers on the target is the rule (the copy phase makes it); a home there holding anything but
    # copies of /etc/skel is someone's data: refused here (prepare-target refuses it again before the import).
    resuming = marker or (source.account is None and (source.moved or {}).get("target") == to)
    if target.facts.get("home_foreign") == "yes" and not resuming:
        problems.append(
            f"{target.host}: {user['home']} already holds files that are not copies of /etc/skel; move them away"
            " or merge by hand"
        )
    if source.runs(name) and not stop:
        problems.append(f"{source.host}: {name}'s runtime is running; stop it, or add --stop to stop it gracefully")
    if target.runs(name):
        problems.append(f"{target.host}: {name} has a runtime running there; stop it first")
    quota = user.get("quota_bytes")
    if quota and headroom_bytes is not None and quota > headroom_bytes:
        problems.append(
            f"{target.host}: {name}'s quota {rules.human_size(quota)} does not fit the homes volume's quota headroom"
            f" ({rules.human_size(max(headroom_bytes, 0))} left after the quotas of its users)"
        )
    need, avail = source.number("home_allocated"), target.number("volume_avail")
    if source.account is not None and need is not None and avail is not None and need > avail:
        problems.append(
            f"{target.host}: {name}'s home takes {rules.human_size(need)}, the homes volume has"
            f" {rules.human_size(avail)} free"
        )
    return problems


def _playbook(phase: str, inventory: Path, move: dict[str, Any]) -> tuple[dict[str, Mapping[str, Any]], list[str]]:
    task = REPORT_TASK.format(phase=phase)
    model = runner.ProgressModel(watch=frozenset({task}))
    runner.run_playbook(
        runner.command_playbook("move"),
        inventory=str(inventory),
        extravars={"metalab_move": dict(move, phase=phase)},
        model=model,
        keep_artifacts=1,
    )
    reports = {
        h: r.res.get("msg") or {}
        for h, r in model.results.get(task, {}).items()
        if r.outcome == "ok" and isinstance(r.res.get("msg"), Mapping)
    }
    errors = [f"{h.name}: {h.message or 'failed'}" for h in model.hosts.values() if h.failed or h.unreachable]
    if not model.finished and not errors:
        errors = [" ".join(list(model.messages)[-3:]) or "the playbook did not run"]
    return reports, errors


def probe(inventory: Path, move: dict[str, Any]) -> dict[str, HostProbe]:
    reports, errors = _playbook("probe", inventory, move)
    if errors:
        raise MoveRefused("probe failed, nothing changed: " + "; ".join(errors))
    return {host: parse_probe(host, msg) for host, msg in reports.items()}


def set_host(doc: Any, name: str, host: str) -> None:
    users = doc.users
    entry: Any = next(u for u in users if isinstance(u, Mapping) and u.get("name") == name)
    entry["host"] = host
    errors = rules.validate_users(plain(list(users)), **_validator_settings(doc))["errors"]
    if errors:
        raise UsersError(f"{doc.path}: " + "; ".join(map(str, errors)) + " (nothing written)")
    write_atomically(doc.path, doc.dump())


def step(text: str) -> None:
    click.echo(text)


def inventory_data(inventory: Path) -> dict[str, Any]:
    """The inventory as ansible-inventory --list prints it (layout.read); MoveRefused when it cannot be read."""
    try:
        return layout.read(str(inventory))
    except layout.LayoutError as exc:
        raise MoveRefused(f"{exc.message}; nothing changed") from None


@click.command("move")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="HOST", help="The lab host that becomes her home host.")
@click.option("--stop", is_flag=True, help="Stop her running runtime gracefully first (else: refused while it runs).")
@click.option("-i", "--inventory", metavar="INVENTORY", help="Inventory file or directory [env: METALAB_INVENTORY].")
def cli(name: str, to: str, stop: bool, inventory: str | None) -> None:
    """Move lab user NAME's home (and her runtime history) to lab host HOST; the old home stays as an archive."""
    inv = config.require_inventory(inventory)
    doc = locate(inv)
    _, user = normalised(doc, name)
    data = inventory_data(inv)
    hosts = layout.lab_hosts(data)
    if to not in hosts:
        raise MoveRefused(f"{to!r} is not a lab host of the inventory (lab hosts: {', '.join(hosts)}); nothing changed")
    try:
        source = layout.home_host(data, name)
    except layout.LayoutError as exc:
        raise MoveRefused(f"{exc.message}; nothing changed") from None
    if source == to:
        step(f"{name} is already homed on {to}: nothing to do")
        return
    move: dict[str, Any] = {
        "user": name,
        "login": user["login"],
        "home": user["home"],
        "source": source,
        "target": to,
        "stop": stop,
        "quota_bytes": user["quota_bytes"],
        # her lab_users_lab entry as it will be: the copy phase makes her account, empty home and quota on the target
        "account": {**user, "host": to},
    }
    step(f"1/4 probe: {source} (her home) and {to}")
    probes = probe(inv, move)
    src, dst = probes.get(source), probes.get(to)
    if src is None or dst is None:
        raise MoveRefused(f"probe: no answer from {source if src is None else to}; nothing changed")
    size = dst.number("volume_size")
    room = headroom(doc, to, name, hosts, size) if size is not None else None
    problems = check(user, src, dst, stop, room, to)
    if problems:
        raise MoveRefused("refused, nothing changed:\n  " + "\n  ".join(problems))
    marker = src.marker or (src.moved if src.account is None else None)
    move["stamp"] = str(marker["stamp"]) if marker else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    step(f"    {'resuming the move ' + move['stamp'] if marker else 'new move ' + move['stamp']}; quota fits on {to}")
    if src.account is not None:
        move["uid_source"], move["gid_source"] = src.account[2], src.account[3]
        runner.cache_dir().mkdir(parents=True, exist_ok=True)  # the relay: the archive passes through here
        relay = Path(tempfile.mkdtemp(prefix="labctl-move-", dir=runner.cache_dir()))
        try:
            step(f"2/4 copy: archive on {source}, relay through this machine, import and verify on {to}, ledger rows")
            reports, errors = _playbook("copy", inv, dict(move, relay=str(relay)))
        finally:
            shutil.rmtree(relay, ignore_errors=True)
        if errors or to not in reports:
            raise click.ClickException(
                "copy failed: " + "; ".join(errors or ["no report"]) + f"\n{name} stays on {source} (nothing removed"
                " there); run the same command again to finish"
            )
        report = reports[to]
        totals = (report.get("import") or {}).get("totals") or {}
        step(
            f"    {to}: {totals.get('entries')} entries verified ({totals.get('bytes')} bytes),"
            f" ledger rows: {(report.get('ledger') or {}).get('user_rows')}"
        )
        if os.environ.get("METALAB_MOVE_STOP_AFTER") == "copy":  # tests: an interruption between copy and retire
            raise click.ClickException(f"interrupted after copy (METALAB_MOVE_STOP_AFTER); {name} stays on {source}")
        step(f"3/4 retire on {source}: archive checked, ledger rows, account and home removed")
        reports, errors = _playbook("retire", inv, move)
        if errors:
            raise click.ClickException(
                "retire failed: " + "; ".join(errors) + f"\n{name}'s home is verified on {to}; run the same command"
                " again to finish"
            )
        step(f"    archive kept on {source}: {(reports.get(source) or {}).get('archive')}")
    else:
        step(f"2/4 copy and 3/4 retire: done by an earlier run (no account of {name} left on {source})")
    set_host(doc, name, to)
    step(f"4/4 inventory: {name}'s host is {to} in {doc.path}")
    step(next_command(data, source, to, inventory))


def next_command(data: Mapping[str, Any], source: str, to: str, inventory: str | None) -> str:
    """The converge that makes both hosts and the front door follow the new layout: the guard's users and the backup
    on both hosts, the front door's routes (docs/operations.md, "Moving a user")."""
    hosts = [source, to] + sorted(layout.members(data, "lab_frontdoor") - {source, to})
    where = f" -i {inventory}" if inventory else ""
    return (
        "next: the guard and the backup of both hosts and the front door follow the old layout until this converge:\n"
        f"    labctl provision{where} --limit {','.join(hosts)} --tags lab_users,runtimes,backup"
    )
