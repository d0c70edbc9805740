"""The lab layout from labctl's side (issue 17, docs/inventory.md): the lab hosts, each user's home host, and the
home host of a new user (placement).

``inventory_data`` is what ``ansible-inventory --list`` prints for the inventory (``read``): the groups, and every
host's variables under ``_meta.hostvars``. The rules themselves (validate_layout, home_hosts) are metalab.rules', the
ones the playbook's preflight applies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from metalab import rules

LAB_HOSTS_DEFAULT = "all:!lab_backup_target"  # site.yml's play, when the inventory sets no lab_hosts


class LayoutError(click.ClickException):
    pass


def read(inventory: str | None) -> dict[str, Any]:
    """The inventory as ``ansible-inventory --list`` prints it: read directly when it is a plain YAML inventory (a
    hosts file, or a directory holding one and group_vars/), else by ansible-inventory with the collection's
    ansible.cfg. LayoutError when it cannot be read."""
    from pathlib import Path

    if inventory:
        fast = _plain_yaml(Path(inventory).expanduser())
        if fast is not None:
            return fast
    from metalab.labctl.doctor import read_inventory

    data, error = read_inventory(inventory)
    if data is None:
        raise LayoutError(f"cannot read the inventory {inventory or '(ansible.cfg default)'}: {error}")
    return data


def _plain_yaml(path: Any) -> dict[str, Any] | None:
    """A YAML inventory (hosts, children, vars; group_vars/all beside it) in ansible-inventory's --list form, or None
    for anything else (INI, plugins, scripts, vault tags, several sources): ansible-inventory reads those."""
    import yaml

    base = path if path.is_dir() else path.parent
    if path.is_dir():
        sources = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(sources) != 1 or sources[0].name not in ("hosts.yml", "hosts.yaml"):
            return None
        path = sources[0]
    if path.suffix not in (".yml", ".yaml") or not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
        extra: dict[str, Any] = {}
        group_vars = base / "group_vars"
        files = [group_vars / "all.yml", group_vars / "all.yaml"]
        files += sorted((group_vars / "all").glob("*.y*ml")) if (group_vars / "all").is_dir() else []
        for file in files:
            if file.is_file():
                extra.update(yaml.safe_load(file.read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None
    if not isinstance(doc, Mapping) or "plugin" in doc or not isinstance(doc.get("all", {}), Mapping):
        return None
    data: dict[str, Any] = {"_meta": {"hostvars": {}}}
    hostvars: dict[str, dict[str, Any]] = data["_meta"]["hostvars"]

    def walk(name: str, node: Any, inherited: Mapping[str, Any]) -> None:
        node = node if isinstance(node, Mapping) else {}
        group_vars = {**inherited, **(node.get("vars") or {})}
        entry = data.setdefault(name, {"hosts": [], "children": []})
        for host, host_vars in (node.get("hosts") or {}).items():
            entry["hosts"].append(str(host))
            hostvars.setdefault(str(host), {}).update({**group_vars, **(host_vars or {})})
        for child, child_node in (node.get("children") or {}).items():
            entry["children"].append(str(child))
            walk(str(child), child_node, group_vars)

    walk("all", doc.get("all") or {}, extra)
    for name, node in doc.items():
        if name != "all":
            data["all"]["children"].append(str(name))
            walk(str(name), node, extra)
    return data


def _hostvars(data: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return (data.get("_meta") or {}).get("hostvars") or {}


def members(data: Mapping[str, Any], group: str, _seen: frozenset[str] = frozenset()) -> set[str]:
    """The hosts of an inventory group, its child groups' included."""
    if group in _seen or not isinstance(data.get(group), Mapping):
        return set()
    node = data[group]
    hosts = set(node.get("hosts") or [])
    for child in node.get("children") or []:
        hosts |= members(data, child, _seen | {group})
    return hosts


def all_hosts(data: Mapping[str, Any]) -> set[str]:
    return members(data, "all") | set(_hostvars(data))


def _term(data: Mapping[str, Any], term: str) -> set[str]:
    everything = all_hosts(data)
    if term in ("all", "*"):
        return everything
    if isinstance(data.get(term), Mapping) and term != "_meta":
        return members(data, term)
    if term in everything:
        return {term}
    return {h for h in everything if fnmatch.fnmatchcase(h, term)}


def select(data: Mapping[str, Any], pattern: str | Sequence[str]) -> list[str]:
    """The hosts of an Ansible host pattern, sorted: groups, host names and wildcards joined by ``:`` or ``,``,
    with ``&`` (and) and ``!`` (not) - what site.yml's ``hosts: lab_hosts`` takes (regular expressions are not)."""
    terms = [pattern] if isinstance(pattern, str) else list(pattern)
    parts = [t.strip() for text in terms for t in str(text).replace(",", ":").split(":") if t.strip()]
    chosen: set[str] = set()
    for part in parts:
        if not part.startswith(("!", "&")):
            chosen |= _term(data, part)
    for part in parts:
        if part.startswith("&"):
            chosen &= _term(data, part[1:])
    for part in parts:
        if part.startswith("!"):
            chosen -= _term(data, part[1:])
    return sorted(chosen)


def _lab_var(data: Mapping[str, Any], name: str, hosts: Sequence[str] | None = None) -> Any:
    """A lab-wide variable as the (first) host that has it sees it."""
    hostvars = _hostvars(data)
    for host in hosts if hosts is not None else sorted(hostvars):
        if name in (hostvars.get(host) or {}):
            return hostvars[host][name]
    return None


def lab_hosts(data: Mapping[str, Any]) -> list[str]:
    """The lab hosts: the inventory's hosts of its lab_hosts pattern (default: all but the group lab_backup_target)."""
    return select(data, _lab_var(data, "lab_hosts") or LAB_HOSTS_DEFAULT)


def gpu_hosts(data: Mapping[str, Any]) -> list[str]:
    return sorted(members(data, rules.GPU_HOSTS_GROUP))


def lab_users(data: Mapping[str, Any]) -> list[Any]:
    users = _lab_var(data, "lab_users", lab_hosts(data))
    return list(users) if isinstance(users, list) else []


def home_host(inventory_data: Mapping[str, Any], user: str) -> str:
    """USER's home host: her lab_users entry's ``host``, or the lab's only host (whatever lab_users says, as
    before the layout existed). LayoutError naming the user when there is none."""
    hosts = lab_hosts(inventory_data)
    if not hosts:
        raise LayoutError("the inventory has no lab host")
    if len(hosts) == 1:
        return hosts[0]
    entry = next((u for u in lab_users(inventory_data) if isinstance(u, Mapping) and u.get("name") == user), None)
    if entry is None:
        raise LayoutError(f"{user} is not in lab_users, so she has no home host (lab hosts: {', '.join(hosts)})")
    host = entry.get("host")
    if not host:
        raise LayoutError(
            f"{user} has no home host: her lab_users entry needs host: (one of {', '.join(hosts)}) in a lab of "
            f"{len(hosts)} hosts"
        )
    if host not in hosts:
        raise LayoutError(f"{user}'s home host {host!r} is not a lab host (lab hosts: {', '.join(hosts)})")
    return str(host)


def check_gpu_home(inventory: Any, user: str) -> None:
    """`labctl users set NAME --gpu`: in a lab of several hosts her home host must be in gpu_hosts (else a move)."""
    data = read(str(inventory))
    hosts = lab_hosts(data)
    if len(hosts) > 1:
        home = home_host(data, user)
        if home not in gpu_hosts(data):
            raise LayoutError(
                f"{user}'s home host {home} has no GPUs (not in the group {rules.GPU_HOSTS_GROUP}): move her to a GPU "
                f"host first (labctl users move {user} --to HOST); nothing written"
            )


def target(user: str, inventory: str, host: str | None) -> str:
    """The host a command about USER acts on: --host when given, else her home host (once)."""
    return host or home_host(read(inventory), user)


# --- placement: the home host of a new user (labctl users add without --host) ------------------------------------


@dataclass(frozen=True)
class Placement:
    host: str
    why: str  # one line for the output: the candidates and the headroom of each


def headroom(
    resolved: Sequence[Mapping[str, Any]], hosts: Sequence[str], sizes: Mapping[str, int | None]
) -> dict[str, int]:
    """Host -> homes volume size minus the quotas of the present users homed there (hosts of unknown size left out).
    ``resolved``: rules.validate_users' users with ``host`` filled in (rules.with_home_hosts)."""
    out: dict[str, int] = {}
    for host in hosts:
        size = sizes.get(host)
        if size:
            used = sum(int(u.get("quota_bytes") or 0) for u in rules.present_users(resolved) if u.get("host") == host)
            out[host] = int(size) - used
    return out


def _size(size: int) -> str:
    """A volume-sized number for people: 85G, 250.9G, 1.5T (binary units, one decimal at most)."""
    unit, factor = ("T", 1024**4) if size >= 1024**4 else ("G", 1024**3)
    return f"{size / factor:.1f}".rstrip("0").rstrip(".") + unit


def place(
    name: str,
    gpu: bool,
    resolved: Sequence[Mapping[str, Any]],
    hosts: Sequence[str],
    gpus: Sequence[str],
    sizes: Mapping[str, int | None],
) -> Placement:
    """The home host of new user NAME: among the hosts that can run what she may start (a host of gpu_hosts for a
    GPU user, any lab host otherwise), the one with the most quota headroom on its homes volume; ties go to the first
    name. Pure; LayoutError when no host qualifies."""
    candidates = sorted(h for h in hosts if h in gpus) if gpu else sorted(hosts)
    if not candidates:
        raise LayoutError(
            f"no lab host can run {name}'s GPU runtimes: no lab host is in the group {rules.GPU_HOSTS_GROUP} "
            "(add the GPU hosts to it, or give --host)"
        )
    room = headroom(resolved, candidates, sizes)
    unknown = [h for h in candidates if h not in room]
    if not room:
        raise LayoutError(
            f"cannot read the homes volume of {', '.join(unknown)} (not provisioned or unreachable?); give --host"
        )
    best = sorted(room, key=lambda h: (-room[h], h))[0]
    kind = "a GPU user (hosts of gpu_hosts)" if gpu else "a CPU user (every lab host)"
    listed = ", ".join(
        f"{h} {_size(room[h]) if room[h] > 0 else 'none'} of {_size(int(sizes[h] or 0))}"
        for h in sorted(room, key=lambda h: (-room[h], h))
    )
    why = f"{name} -> {best}: the most quota headroom among the hosts for {kind}: {listed} free after quotas"
    if unknown:
        why += f" ({', '.join(unknown)}: homes volume not readable, left out)"
    if len([h for h in room if room[h] == room[best]]) > 1:
        why += "; a tie, broken by name"
    return Placement(best, why)


# Replaced by the tests; labctl reads the sizes on the hosts (playbooks/labctl/homes_size.yml).
def read_sizes(inventory: str, hosts: Sequence[str]) -> dict[str, int | None]:
    """Host -> size in bytes of the filesystem holding lab_homes_root (None: not readable), read on the hosts."""
    from metalab.labctl import runner

    report = "Report"
    model = runner.ProgressModel(watch=frozenset({report}))
    runner.run_playbook(
        runner.command_playbook("homes_size"),
        inventory=inventory,
        extravars={"metalab_target": ",".join(hosts)},
        model=model,
        keep_artifacts=0,
    )
    sizes: dict[str, int | None] = {h: None for h in hosts}
    for host, result in model.results.get(report, {}).items():
        msg = result.res.get("msg") or {}
        if result.outcome == "ok" and isinstance(msg, Mapping) and str(msg.get("rc")) == "0":
            lines = str(msg.get("stdout") or "").split()
            sizes[host] = int(lines[-1]) if lines and lines[-1].isdigit() else None
    return sizes


SIZES: Callable[[str, Sequence[str]], dict[str, int | None]] = read_sizes


def home_hosts_for(inventory: Any, entries: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[str]]:
    """New lab_users entries (name, quota, gpu, host or None) with their home hosts, and one line per placement.

    A lab of one host: entries without a host stay without one (that host is everyone's home, as before). A given
    host must be a lab host (and, in a lab of several, a host of gpu_hosts for a GPU user). Otherwise each user is
    placed in turn (``place``), the quotas of those placed before her counted."""
    from metalab.labctl import inventory as users_inventory

    data = read(str(inventory))
    hosts = lab_hosts(data)
    gpus = gpu_hosts(data)
    for name, _quota, gpu, host in entries:
        if host and host not in hosts:
            raise LayoutError(
                f"{name}: host {host!r} is not a lab host (lab hosts: {', '.join(hosts)}); nothing written"
            )
        if host and gpu and len(hosts) > 1 and host not in gpus:
            raise LayoutError(
                f"{name}: a GPU user, but {host!r} is not in the group {rules.GPU_HOSTS_GROUP} "
                f"({', '.join(gpus) or 'empty'}); nothing written"
            )
    if len(hosts) <= 1 or all(e[3] for e in entries):
        return [tuple(e) for e in entries], []
    doc = users_inventory.locate(inventory)
    settings = users_inventory._validator_settings(doc)
    existing = users_inventory.plain(list(doc.users or [])) or []
    # The list as it will be (without hosts yet) first: a bad entry is refused with the playbook's message.
    errors = users_inventory.validate(
        existing + [{"name": e[0], "gpu": e[2], **({"quota": e[1]} if e[1] else {})} for e in entries], **settings
    )
    if errors:
        raise users_inventory.UsersError(f"{doc.path}: " + "; ".join(errors) + " (nothing written)")
    checked = rules.validate_users(existing, **settings)
    resolved = rules.with_home_hosts(checked["users"], hosts)
    default_quota = settings.get("default_quota", rules.DEFAULT_QUOTA)
    sizes = SIZES(str(inventory), hosts)
    out: list[tuple[Any, ...]] = []
    notes: list[str] = []
    for name, quota, gpu, host in entries:
        try:
            quota_bytes = rules.parse_size(quota or default_quota)
        except rules.SizeError as exc:
            raise LayoutError(f"{name}: {exc}; nothing written") from None
        if not host:
            placement = place(name, gpu, resolved, hosts, gpus, sizes)
            host = placement.host
            notes.append(placement.why)
        resolved.append({"name": name, "host": host, "quota_bytes": quota_bytes, "state": "present"})
        out.append((name, quota, gpu, host))
    return out, notes
