"""`labctl users`: edit the inventory's ``lab_users`` in place (comments, order and quoting kept).

``lab_users`` is looked up beside the inventory: ``all.vars`` of the YAML hosts file,
``group_vars/all.yml`` (or ``.yaml``) and ``group_vars/all/*.yml``. Every change is
validated as a whole list with the collection's own validator (the one the playbook's
preflight uses) before anything is written, and the file is replaced atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from metalab.labctl import collection, config, output, runner

HOSTS_FILES = ("hosts.yml", "hosts.yaml")
TRUE = {"true", "yes", "y", "1", "on"}
FALSE = {"false", "no", "n", "0", "off", ""}


class UsersError(click.ClickException):
    pass


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    return yaml


@dataclass
class UsersDocument:
    """One YAML file, loaded for round-trip editing, and where ``lab_users`` lives (or will live) in it."""

    path: Path
    data: Any
    keys: tuple[str, ...]  # path of the mapping that holds lab_users: ("all", "vars") or ()
    original: bytes = b""
    indent: tuple[int, int] = (2, 0)  # (sequence indent, dash offset) guessed from the file
    errors: list[str] = field(default_factory=list)

    @property
    def holder(self) -> Any:
        """The mapping that holds (or will hold) lab_users; {} while it does not exist."""
        node = self.data
        for key in self.keys:
            if not isinstance(node, Mapping) or not isinstance(node.get(key), Mapping):
                return {}
            node = node[key]
        return node if isinstance(node, Mapping) else {}

    @property
    def users(self) -> Any:
        node = self.data
        for key in self.keys:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node.get("lab_users") if isinstance(node, Mapping) else None

    def ensure_users(self) -> Any:
        from ruamel.yaml.comments import CommentedMap, CommentedSeq

        if self.data is None:
            self.data = CommentedMap()
        node = self.data
        for key in self.keys:
            if node.get(key) is None:
                node[key] = CommentedMap()
            node = node[key]
        if node.get("lab_users") is None:
            node["lab_users"] = CommentedSeq()
        return node["lab_users"]

    def dump(self) -> bytes:
        yaml = _yaml()
        mapping = max(2, self.indent[0] - self.indent[1]) if self.indent[1] else self.indent[0]
        yaml.indent(mapping=mapping, sequence=self.indent[0], offset=self.indent[1])
        buf = io.StringIO()
        yaml.dump(self.data, buf)
        text = buf.getvalue()
        if self.original.startswith(b"---") and not text.startswith("---"):
            text = "---\n" + text
        return text.encode()


def load_document(path: Path, keys: tuple[str, ...]) -> UsersDocument:
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    raw = path.read_bytes() if path.exists() else b""
    try:
        data, indent, block_seq_indent = load_yaml_guess_indent(raw.decode()) if raw.strip() else (None, 2, 0)
        # Re-load with our settings (quotes kept); the guess only tells the layout.
        data = _yaml().load(raw.decode()) if raw.strip() else None
    except YAMLError as exc:
        raise UsersError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    seq_indent = indent or 2
    offset = block_seq_indent or 0
    return UsersDocument(path=path, data=data, keys=keys, original=raw, indent=(seq_indent, offset))


def candidate_files(inventory: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """Files that may hold lab_users, with the key path of the mapping that holds it."""
    base = inventory if inventory.is_dir() else inventory.parent
    found: list[tuple[Path, tuple[str, ...]]] = []
    hosts = [inventory] if inventory.is_file() else [base / name for name in HOSTS_FILES if (base / name).is_file()]
    found += [(h, ("all", "vars")) for h in hosts if h.suffix in (".yml", ".yaml")]
    group_vars = base / "group_vars"
    found += [(group_vars / name, ()) for name in ("all.yml", "all.yaml") if (group_vars / name).is_file()]
    if (group_vars / "all").is_dir():
        found += [(p, ()) for p in sorted((group_vars / "all").iterdir()) if p.suffix in (".yml", ".yaml")]
    return found


def locate(inventory: Path) -> UsersDocument:
    """The document that holds lab_users, or the one where it will be created."""
    holders = []
    for path, keys in candidate_files(inventory):
        doc = load_document(path, keys)
        if doc.users is not None:
            holders.append(doc)
    if len(holders) > 1:
        places = " and ".join(str(d.path) for d in holders)
        raise UsersError(f"lab_users is defined in {places}; keep it in one place so labctl knows which to edit")
    if holders:
        return holders[0]
    base = inventory if inventory.is_dir() else inventory.parent
    group_vars = base / "group_vars"
    for name in ("all.yml", "all.yaml"):
        if (group_vars / name).is_file():
            return load_document(group_vars / name, ())
    if (group_vars / "all").is_dir():
        return load_document(group_vars / "all" / "lab_users.yml", ())
    hosts = inventory if inventory.is_file() else next((base / n for n in HOSTS_FILES if (base / n).is_file()), None)
    if hosts is not None and hosts.suffix in (".yml", ".yaml"):
        return load_document(hosts, ("all", "vars"))
    return load_document(group_vars / "all.yml", ())


def plain(value: Any) -> Any:
    """ruamel's round-trip types as plain Python (what the validator and --json see)."""
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def _validator_settings(doc: UsersDocument) -> dict[str, Any]:
    holder = doc.holder
    settings: dict[str, Any] = {}
    if isinstance(holder, Mapping):
        if "lab_users_default_quota" in holder:
            settings["default_quota"] = plain(holder["lab_users_default_quota"])
        if "lab_users_prefix" in holder:
            settings["prefix"] = plain(holder["lab_users_prefix"])
    return settings


def validate(users: list[dict[str, Any]], **settings: Any) -> list[str]:
    """Errors from the collection's validator (plugins/module_utils/labusers.py); empty when the list is fine."""
    collection.ensure_importable()
    from ansible_collections.metalab.lab.plugins.module_utils import labusers  # type: ignore[import-not-found]

    result = labusers.validate_users(users, **settings)
    errors = result.get("errors", []) if isinstance(result, Mapping) else result
    # Templated values ({{ ... }}) cannot be judged here; the playbook's preflight checks them on the host.
    return [str(e) for e in errors]


def write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_entry(name: str, quota: str | None, gpu: bool, like: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    entry = CommentedMap()
    entry["name"] = name
    if quota:
        entry["quota"] = quota
    entry["gpu"] = gpu
    if isinstance(like, CommentedMap) and like.fa.flow_style():
        entry.fa.set_flow_style()
    return entry


def _move_trailing_comment(prev: Any, new: Any) -> None:
    """Comments after the old last entry belong to what follows the list: keep them after the new entries.

    ruamel hangs everything between the last entry and the next key (blank lines, a comment that
    introduces the next setting) on the last key of the last entry; only its end-of-line comment stays.
    """
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if not isinstance(prev, CommentedMap) or not isinstance(new, CommentedMap) or not prev or not new:
        return
    last = list(prev.keys())[-1]
    slots = prev.ca.items.get(last)
    if not slots or len(slots) < 3 or slots[2] is None:
        return
    token = slots[2]
    first, _, rest = token.value.partition("\n")
    if not rest:
        return
    slots[2] = CommentToken(first + "\n", CommentMark(token.column), None) if first.strip() else None
    token.value = "\n" + rest  # the new last line ends, then what followed the old one
    new.ca.items[list(new.keys())[-1]] = [None, None, token, None]


def commit(doc: UsersDocument, users: Any) -> None:
    """Validate the whole list, then write the file; raise (file untouched) on any error."""
    errors = validate(plain(list(users)) or [], **_validator_settings(doc))
    if errors:
        raise UsersError(f"{doc.path}: " + "; ".join(errors) + " (nothing written)")
    write_atomically(doc.path, doc.dump())


def add_users(inventory: Path, entries: list[tuple[str, str | None, bool]]) -> UsersDocument:
    doc = locate(inventory)
    existing = doc.users
    users = list(existing) if existing is not None else []
    like = users[-1] if users else None
    new = [_new_entry(name, quota, gpu, like) for name, quota, gpu in entries]
    # Validate before touching the document, then append to the real sequence (keeps its comments).
    errors = validate(plain(users + new) or [], **_validator_settings(doc))
    if errors:
        raise UsersError(f"{doc.path}: " + "; ".join(errors) + " (nothing written)")
    seq = doc.ensure_users()
    if len(seq) and new:
        _move_trailing_comment(seq[-1], new[-1])
    for entry in new:
        seq.append(entry)
    commit(doc, seq)
    return doc


def remove_user(inventory: Path, name: str) -> tuple[UsersDocument, bool]:
    """Mark ``name`` absent; returns (document, changed)."""
    doc = locate(inventory)
    users = doc.users or []
    entry: Any = next((u for u in users if isinstance(u, Mapping) and u.get("name") == name), None)
    if entry is None:
        raise UsersError(f"{doc.path}: no lab user named {name!r}")
    if entry.get("state") == "absent":
        return doc, False
    entry["state"] = "absent"
    commit(doc, users)
    return doc, True


def read_roster(path: Path) -> list[tuple[str, str | None, bool]]:
    """A class roster: CSV with a header row, columns name (required), quota, gpu."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsersError(f"{path}: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "name" not in columns:
        raise UsersError(f"{path}: the first row must name the columns: name,quota,gpu")
    unknown = sorted(set(columns) - {"name", "quota", "gpu"})
    if unknown:
        raise UsersError(f"{path}: unknown column(s) {', '.join(unknown)} (allowed: name, quota, gpu)")
    rows = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        gpu = row.get("gpu", "").lower()
        if gpu not in TRUE | FALSE:
            raise UsersError(f"{path}:{line}: gpu must be true or false, got {row.get('gpu')!r} (nothing written)")
        rows.append((row["name"], row.get("quota") or None, gpu in TRUE))
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
@click.option("--csv", "roster", type=click.Path(path_type=Path), help="Add every row of a roster (name,quota,gpu).")
@INVENTORY_OPTION
@APPLY_OPTION
@PLAIN_OPTION
def add_cmd(
    name: str | None,
    quota: str | None,
    gpu: bool,
    roster: Path | None,
    inventory: str | None,
    apply: bool,
    plain: bool,
) -> None:
    """Add lab user NAME, or every user of a class roster (--csv)."""
    if bool(name) == bool(roster):
        raise click.UsageError("give either NAME or --csv ROSTER")
    if roster and (quota or gpu):
        raise click.UsageError("--quota and --gpu go in the roster's columns with --csv")
    inv = config.require_inventory(inventory)
    entries = read_roster(roster) if roster else [(str(name), quota, gpu)]
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


@cli.command("list")
@INVENTORY_OPTION
@output.output_options()
def list_cmd(inventory: str | None, output: str | None) -> None:  # noqa: A002 - the option's name
    """List the inventory's lab users."""
    from metalab.labctl import output as out

    fmt = out.resolve_format(output)
    doc = locate(config.require_inventory(inventory))
    rows = user_rows(doc.users)
    if fmt == "table":
        for row in rows:
            row["quota"] = row["quota"] or "(default)"
    out.emit(rows, LIST_COLUMNS, fmt, title=f"lab_users in {_rel(doc.path)}")


# --- portal passwords and enrollment links (metalab-broker on the lab hosts) ---------------------------------

# Run on the lab host(s) by ``labctl users passwd|enroll``. The password travels as the command's stdin, read on the
# controller from a 0600 file in a throwaway directory: never on a command line, never in an event (no_log).
BROKER_PLAY = """---
- name: metalab-broker on the lab hosts
  hosts: "{{ metalab_target }}"
  become: true
  gather_facts: false
  tasks:
    - name: One host only
      ansible.builtin.assert:
        that: ansible_play_hosts_all | length == 1
        fail_msg: "{{ ansible_play_hosts_all | length }} hosts matched; choose one with --host"
        quiet: true
      when: metalab_single_host | bool

    - name: Run metalab-broker
      ansible.builtin.command:
        argv: >-
          {{ ['/usr/local/bin/metalab-broker'] + metalab_broker_args
             + (['--base-url', metalab_base_url | default('https://' ~ (ansible_host | default(inventory_hostname))
                 ~ ('' if frontdoor_https_port | default(443) | int == 443 else ':' ~ frontdoor_https_port))]
                if metalab_wants_base_url | bool else []) }}
        stdin: "{{ lookup('ansible.builtin.file', metalab_stdin_file) if metalab_stdin_file else omit }}"
      register: metalab_broker
      changed_when: metalab_broker.rc == 0
      failed_when: false
      no_log: true

    - name: Report
      ansible.builtin.debug:
        msg: "{{ {'rc': metalab_broker.rc, 'stdout': metalab_broker.stdout, 'stderr': metalab_broker.stderr} }}"
"""


@dataclass
class BrokerResult:
    host: str
    rc: int
    stdout: str = ""
    stderr: str = ""


def broker_results(events: list[dict[str, Any]]) -> tuple[dict[str, BrokerResult], list[str]]:
    """Per-host results of the ``Report`` task, and the messages of hosts that failed before it (pure)."""
    results: dict[str, BrokerResult] = {}
    errors: list[str] = []
    for event in events:
        data: Mapping[str, Any] = event.get("event_data") or {}
        host, res = data.get("host"), data.get("res") or {}
        if not host:
            continue
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
            errors.append(f"{host}: {' '.join(str(res.get('msg') or 'failed').split())}")
        elif event.get("event") == "runner_on_ok" and data.get("task") == "Report":
            msg = res.get("msg") or {}
            rc, out, err = int(msg.get("rc", 1)), str(msg.get("stdout", "")), str(msg.get("stderr", ""))
            results[host] = BrokerResult(host, rc, out, err)
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
    import shutil

    import ansible_runner  # slow import: only when something runs

    root = collection.root()
    runner.ensure_tools_on_path()
    events: list[dict[str, Any]] = []

    def keep(event: dict[str, Any]) -> bool:
        events.append(event)
        return True

    private = Path(tempfile.mkdtemp(prefix="labctl-broker."))  # 0700; holds the password file while it runs
    try:
        project = private / "project"
        project.mkdir()
        (project / "broker.yml").write_text(BROKER_PLAY)
        stdin_file = ""
        if stdin is not None:
            fd = os.open(private / "stdin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(stdin)
            stdin_file = str(private / "stdin")
        extravars: dict[str, Any] = {
            "metalab_target": hosts,
            "metalab_broker_args": args,
            "metalab_stdin_file": stdin_file,
            "metalab_single_host": single_host,
            "metalab_wants_base_url": wants_base_url,
        }
        if base_url:
            extravars["metalab_base_url"] = base_url
        job = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(project),
            playbook="broker.yml",
            inventory=str(Path(inventory).expanduser().resolve()),
            extravars=extravars,
            envvars={"ANSIBLE_CONFIG": str(root / "ansible.cfg")},
            event_handler=keep,
            quiet=True,
        )
        results, errors = broker_results(events)
        for error in errors:
            click.echo(f"labctl: {error}", err=True)
        if not results:
            raise UsersError(f"metalab-broker did not run on {hosts!r} ({job.status}); see the messages above")
        return results
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _broker_exit(results: dict[str, BrokerResult]) -> None:
    bad = [r for r in results.values() if r.rc != 0]
    for r in bad:
        click.echo(f"labctl: {r.host}: {r.stderr.strip() or r.stdout.strip() or f'exit {r.rc}'}", err=True)
    if bad:
        raise SystemExit(2 if all(r.rc == 2 for r in bad) else 1)


HOST_OPTION = click.option("--host", metavar="HOST", help="Lab host (pattern); default: every host of the inventory.")


@cli.command("passwd")
@click.argument("name")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of stdin.")
@HOST_OPTION
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
    results = run_broker(["passwd", name, "--stdin"], inventory=inv, hosts=host or "all", stdin=password + "\n")
    _broker_exit(results)
    click.echo(f"portal password of {name} set on {', '.join(sorted(results))}")


@cli.command("enroll")
@click.argument("name")
@click.option("--ttl", metavar="DURATION", help="How long the link is valid (default: the broker's, 72h).")
@click.option("--base-url", metavar="URL", help="The portal's URL (default: https://<the host's address>).")
@click.option("--json", "as_json", is_flag=True, help="Print {user, url, expires} as JSON.")
@HOST_OPTION
@INVENTORY_OPTION
def enroll_cmd(
    name: str, ttl: str | None, base_url: str | None, as_json: bool, host: str | None, inventory: str | None
) -> None:
    """Print a one-time link with which lab user NAME sets a portal password (single use; a new one replaces it)."""
    inv = str(config.require_inventory(inventory))
    args = ["enroll", name, "--json"] + (["--ttl", ttl] if ttl else [])
    results = run_broker(
        args, inventory=inv, hosts=host or "all", single_host=True, base_url=base_url, wants_base_url=True
    )
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
