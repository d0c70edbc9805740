"""The inventory's ``lab_users``, edited in place: comments, order and quoting kept (ruamel round-trip).

``lab_users`` is looked up beside the inventory: ``all.vars`` of the YAML hosts file,
``group_vars/all.yml`` (or ``.yaml``) and ``group_vars/all/*.yml``. Every change is
validated as a whole list with metalab.rules.validate_users (what the playbook's
preflight uses) before anything is written, and the file is replaced atomically.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from metalab import rules

HOSTS_FILES = ("hosts.yml", "hosts.yaml")


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
    """Errors from metalab.rules.validate_users (what the playbook's preflight uses); empty when the list is fine."""
    return [str(e) for e in rules.validate_users(users, **settings)["errors"]]


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


def _new_entry(name: str, quota: str | None, gpu: bool, like: Any, host: str | None = None) -> Any:
    from ruamel.yaml.comments import CommentedMap

    entry = CommentedMap()
    entry["name"] = name
    if quota:
        entry["quota"] = quota
    entry["gpu"] = gpu
    if host:
        entry["host"] = host  # her home host (the lab layout)
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


def add_users(inventory: Path, entries: list[tuple[Any, ...]]) -> UsersDocument:
    """Append (name, quota, gpu[, home host]) entries, comments kept; validated first, nothing written on error."""
    doc = locate(inventory)
    existing = doc.users
    users = list(existing) if existing is not None else []
    like = users[-1] if users else None
    new = [_new_entry(name, quota, gpu, like, host) for name, quota, gpu, host in ((*e, None)[:4] for e in entries)]
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


def set_user(inventory: Path, name: str, quota: str | None, gpu: bool | None) -> tuple[UsersDocument, list[str]]:
    """Change ``name``'s quota and/or gpu in place (its comments and key order kept); returns (document, changes).

    The whole list is validated (the playbook's rules) before the file is written; on any error it is untouched.
    """
    doc = locate(inventory)
    users = doc.users or []
    entry: Any = next((u for u in users if isinstance(u, Mapping) and u.get("name") == name), None)
    if entry is None:
        raise UsersError(f"{doc.path}: no lab user named {name!r} (nothing written)")
    changes = []
    if quota is not None and plain(entry.get("quota")) != quota:
        from ruamel.yaml.scalarstring import ScalarString

        old = entry.get("quota")
        entry["quota"] = type(old)(quota) if isinstance(old, ScalarString) else quota  # keeps "30G" quoted
        changes.append(f"quota {quota}")
    if gpu is not None and bool(plain(entry.get("gpu", False))) != gpu:
        entry["gpu"] = gpu
        changes.append(f"gpu {str(gpu).lower()}")
    if changes:
        commit(doc, users)
    return doc, changes
