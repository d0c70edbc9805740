"""Every public variable the roles and playbooks read is documented in a role's argument spec, and the specs say
what defaults/main.yml says: the generated reference (docs/roles/) is complete and true."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[3]

# What roles and playbooks read: tasks, templates, defaults, vars, handlers, meta of every role, and the playbooks.
ROLE_PARTS = ("tasks", "templates", "defaults", "vars", "handlers", "meta")
PUBLIC = re.compile(r"(?<![\w.])lab_[a-z0-9_]+")
# A quoted mapping key ('lab_path': in a template's dict) is data, not a variable.
QUOTED_KEY = re.compile(r"""['"](lab_[a-z0-9_]+)['"]\s*:""")


def sources(root: Path):
    for role in sorted((root / "roles").iterdir()):
        for part in ROLE_PARTS:
            yield from sorted(p for p in (role / part).rglob("*") if p.is_file())
    yield from sorted(p for p in (root / "playbooks").rglob("*") if p.is_file())


def public_names(text: str) -> Set[str]:
    """The lab_* names a file reads; a name that only appears as a quoted mapping key is left out."""
    data_keys = {m.start(1) for m in QUOTED_KEY.finditer(text)}
    return {m.group(0) for m in PUBLIC.finditer(text) if m.start() not in data_keys}


def read_public(root: Path) -> Dict[str, Set[str]]:
    """{lab_* name: files that read it}."""
    out: Dict[str, Set[str]] = {}
    for path in sources(root):
        for name in public_names(path.read_text(encoding="utf-8", errors="replace")):
            out.setdefault(name, set()).add(str(path.relative_to(root)))
    return out


def role_defaults(root: Path) -> Dict[str, Dict[str, object]]:
    out = {}
    for path in sorted(root.glob("roles/*/defaults/main.yml")):
        out[path.parents[1].name] = yaml.safe_load(path.read_text()) or {}
    return out


def _task_outputs(node: object) -> Iterator[str]:
    """Names a task list sets: set_fact keys and register targets, blocks included."""
    if isinstance(node, list):
        for item in node:
            yield from _task_outputs(item)
    elif isinstance(node, dict):
        if isinstance(node.get("register"), str):
            yield node["register"]
        for key in ("ansible.builtin.set_fact", "set_fact"):
            if isinstance(node.get(key), dict):
                yield from node[key]
        for key in ("block", "rescue", "always"):
            yield from _task_outputs(node.get(key))


PLUGIN_FACT = re.compile(r"""ansible_facts(?:\s*=\s*\{|["']\s*:\s*\{|\[)\s*["'](lab_[a-z0-9_]+)["']""")


def published(root: Path) -> Set[str]:
    """lab_* names the collection sets itself for the roles after it: not settings. A role's vars/ (e.g.
    lab_proxy_env), a set_fact or register in its tasks, a fact a plugin returns (lab_users_resolved)."""
    out: Set[str] = set()
    for path in root.glob("roles/*/vars/*.yml"):
        out |= set(yaml.safe_load(path.read_text()) or {})
    for path in [*root.glob("roles/*/tasks/*.yml"), *root.glob("playbooks/**/*.yml")]:
        out |= set(_task_outputs(yaml.safe_load(path.read_text())))
    for path in root.glob("plugins/*/*.py"):
        out |= set(PLUGIN_FACT.findall(path.read_text()))
    return {name for name in out if PUBLIC.fullmatch(name)}


def plugin_names(root: Path) -> Set[str]:
    """Names of the collection's modules and plugins (metalab.lab.lab_session, "Run lab_session"): not variables."""
    return {p.stem for p in root.glob("plugins/*/*.py")}


# An inventory group looked up as groups['lab_...'] (lab_backup_target) is a group name, not a variable.
GROUP = re.compile(r"""groups\[['"](lab_[a-z0-9_]+)['"]\]""")


def group_names(root: Path) -> Set[str]:
    return {m.group(1) for path in sources(root) for m in GROUP.finditer(path.read_text(encoding="utf-8"))}


def test_every_public_variable_read_is_documented(documented):
    exempt = published(ROOT) | plugin_names(ROOT) | group_names(ROOT)
    missing = {name: sorted(files) for name, files in read_public(ROOT).items() if name not in set(documented) | exempt}
    assert missing == {}, (
        "read by roles or playbooks but in no role's meta/argument_specs.yml (document it in the spec of the role "
        f"that reads it, then run tools/role_docs.py): {missing}"
    )


def test_every_role_default_is_documented_by_its_role(specs):
    missing = {}
    for role, defaults in role_defaults(ROOT).items():
        options = set()
        for spec in specs.get(role, {}).values():
            options |= set(spec.get("options") or {})
        # __<role>_* are internals by convention (STYLE.md), not settings.
        undocumented = sorted(name for name in set(defaults) - options if not name.startswith("__"))
        if undocumented:
            missing[role] = undocumented
    assert missing == {}, f"defaults/main.yml variables missing from the role's own meta/argument_specs.yml: {missing}"


def test_spec_defaults_say_what_defaults_main_sets(specs):
    """A literal default in defaults/main.yml and the spec's default are the same value (computed ones are shown
    by the reference as the expression, from defaults/main.yml)."""
    wrong = []
    for role, defaults in role_defaults(ROOT).items():
        for entry, spec in specs.get(role, {}).items():
            for name, option in (spec.get("options") or {}).items():
                if name not in defaults or "default" not in option:
                    continue
                value = defaults[name]
                if isinstance(value, str) and "{{" in value:
                    continue
                if option["default"] != value:
                    wrong.append(f"{role} {entry} {name}: spec {option['default']!r}, defaults/main.yml {value!r}")
    assert wrong == []


def test_a_variable_shared_by_roles_is_documented_alike(specs):
    """lab_http_proxy, lab_homes_root, ... are read by several roles: same type, default and choices in each."""
    seen: Dict[str, Tuple[str, Dict[str, object]]] = {}
    differ = []
    for role, entries in specs.items():
        for spec in entries.values():
            for name, option in (spec.get("options") or {}).items():
                shape = {k: option.get(k) for k in ("type", "elements", "default", "choices")}
                first_role, first = seen.setdefault(name, (role, shape))
                if first != shape:
                    differ.append(f"{name}: {first_role} says {first}, {role} says {shape}")
    assert differ == []


def test_facts_the_collection_sets_are_not_settings(tmp_path):
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text(
        "- block:\n    - ansible.builtin.set_fact:\n        lab_a: 1\n  rescue:\n    - register: lab_b\n"
    )
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "plugins" / "action").mkdir(parents=True)
    (tmp_path / "plugins" / "action" / "x.py").write_text('result.update(ansible_facts={"lab_c": 1})\n')
    assert published(tmp_path) == {"lab_a", "lab_b", "lab_c"}


def test_the_scan_finds_reads_and_ignores_data_keys():
    text = "{{ lab_users | default([]) }} {{ {'lab_path': '/user/{user}/lab'} }} metalab.lab.lab_users lab_hosts"
    assert public_names(text) == {"lab_users", "lab_hosts"}
