"""Check inventories against the roles' argument specs the way Ansible does when a role starts (its
validate_argument_spec action: the spec's variables taken from the host's variables, templated, then
ArgumentSpecValidator).

    python tests/unit/docs/spec_check.py < CASES.json

reads {label: variables} of extra cases and prints {"inventories": {label: errors}, "cases": {label: errors},
"variables": {label: variables}} as JSON: the shipped inventories (inventory/**, molecule scenarios) and the cases.
A separate process because the lookups in the inventories need Ansible's collection loader, which would change
how the other unit tests import the collection.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import yaml
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.utils.vars import combine_vars
from ansible.vars.manager import VariableManager

ROOT = Path(__file__).resolve().parents[3]

# Play order (playbooks/site.yml): all roles' defaults are visible to the play, a role's own win at its start.
ROLES = sorted(p.parents[1].name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
# What the first facts of a Debian 12 host look like to the roles' defaults and vars.
FACTS = {
    "ansible_host": "10.0.0.2",
    "inventory_hostname": "lab1",
    "ansible_managed": "managed by metalab",
    "ansible_facts": {"distribution": "Debian", "distribution_major_version": "12", "os_family": "Debian"},
}


def trusted(value: Any) -> Any:
    """Inventory text is templated by Ansible (it is trusted): mark plain-loaded strings the same way."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    return value


def ansible_inventories() -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(label, variables) per host of every inventory file under inventory/ (its 'all' vars when it has no host)."""
    loader = DataLoader()
    for path in sorted(ROOT.glob("inventory/**/*.yml")):
        if {"group_vars", "host_vars"} & set(path.relative_to(ROOT).parts):
            continue
        inventory = InventoryManager(loader=loader, sources=[str(path)])
        manager = VariableManager(loader=loader, inventory=inventory)
        label = str(path.relative_to(ROOT))
        hosts = inventory.get_hosts()
        if not hosts:
            yield label, dict(inventory.groups["all"].get_vars())
        for host in hosts:
            variables = dict(manager.get_vars(host=host, include_hostvars=False))
            variables.pop("ansible_facts", None)  # the (empty) fact cache: facts come from FACTS
            yield f"{label} {host.name}", variables


def molecule_inventories() -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(label, variables) per group and host of every scenario, on top of the shared base (.config/molecule)."""

    def read(path: Path) -> Dict[str, Any]:
        # molecule substitutes $$ with $ (its environment-variable syntax) before Ansible sees the file.
        return yaml.safe_load(path.read_text().replace("$$", "$")) or {}

    base = ((read(ROOT / ".config" / "molecule" / "config.yml").get("provisioner") or {}).get("inventory")) or {}
    for path in sorted(ROOT.glob("molecule/*/molecule.yml")):
        scenario = ((read(path).get("provisioner") or {}).get("inventory")) or {}
        group_vars: Dict[str, Dict[str, Any]] = {}
        for layer in (base, scenario):
            for group, variables in (layer.get("group_vars") or {}).items():
                group_vars[group] = combine_vars(group_vars.get(group, {}), variables or {})
        every = group_vars.get("all", {})
        label = str(path.relative_to(ROOT))
        yield f"{label} all", every
        for group, variables in group_vars.items():
            if group != "all":
                yield f"{label} group {group}", combine_vars(every, variables)
        host_vars: Dict[str, Dict[str, Any]] = {}
        for layer in (base, scenario):
            for host, variables in (layer.get("host_vars") or {}).items():
                host_vars[host] = combine_vars(host_vars.get(host, {}), variables or {})
        for host, variables in host_vars.items():
            yield f"{label} host {host}", combine_vars(every, variables)


def inventories() -> List[Tuple[str, Dict[str, Any]]]:
    return [*ansible_inventories(), *molecule_inventories()]


@cache
def role_files(role: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    loader = DataLoader()
    out = []
    for part in ("defaults", "vars"):
        path = ROOT / "roles" / role / part / "main.yml"
        out.append(loader.load_from_file(str(path), trusted_as_template=True) or {} if path.is_file() else {})
    return out[0], out[1]


def role_start_errors(role: str, inventory_vars: Dict[str, Any]) -> List[str]:
    """The messages Ansible would fail the role's start (every entry point) with, for these inventory variables."""
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    every_default: Dict[str, Any] = {}
    for other in ROLES:
        every_default = combine_vars(every_default, role_files(other)[0])
    defaults, role_vars = role_files(role)
    # Precedence: role defaults < inventory < role vars (vars/main.yml).
    variables = combine_vars(combine_vars(combine_vars(every_default, defaults), trusted(inventory_vars)), role_vars)
    variables = combine_vars(trusted(FACTS), variables)
    templar = Templar(loader=DataLoader(), variables=variables)
    errors = []
    for entry, spec in specs.items():
        options = spec.get("options") or {}
        provided = templar.template({name: variables[name] for name in options if name in variables})
        result = ArgumentSpecValidator(options).validate(provided, validate_role_argument_spec=True)
        errors += [f"{role} {entry}: {message}" for message in result.error_messages]
    return errors


def templated(inventory_vars: Dict[str, Any], names: Tuple[str, ...]) -> Dict[str, Any]:
    variables = combine_vars(trusted(FACTS), trusted(inventory_vars))
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template({name: variables[name] for name in names if name in variables})


def main() -> int:
    # Lookups and filters in inventories and defaults (fileglob, metalab.lab.*) as in a playbook run.
    init_plugin_loader([str(ROOT / "collections")])
    cases = json.load(sys.stdin)
    shipped = inventories()
    out = {
        "inventories": {label: [e for role in ROLES for e in role_start_errors(role, v)] for label, v in shipped},
        "cases": {label: [e for role in ROLES for e in role_start_errors(role, v)] for label, v in cases.items()},
        "variables": {label: templated(v, ("lab_users", "lab_extra_ca_certificates")) for label, v in shipped},
    }
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
