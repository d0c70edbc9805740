"""The layout's rules, checked on the source: which code may import which, no cycles, no side doors.

src/metalab:
- rules.py: the rules every layer shares; standard library only.
- labctl/: the controller (labctl).
- host/: a lab host, as root (guard, broker); standard library, rules and brokerapi only.
- brokerapi/: the broker's protocol and client; standard library and rules only.
- portal/: a lab host, unprivileged (Flask); of metalab it may import only brokerapi and rules.
plugins/: the collection's plugins; of metalab they reach only the rules (module_utils/rules.py, a link).
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src" / "metalab"
PLUGINS = ROOT / "plugins"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
MAX_LINES = 400

# layer -> the metalab packages it may import (besides its own modules)
ALLOWED = {
    "metalab.rules": set(),
    "metalab.brokerapi": {"metalab.rules"},
    "metalab.host": {"metalab.rules", "metalab.brokerapi"},
    "metalab.portal": {"metalab.rules", "metalab.brokerapi"},
    "metalab.labctl": {"metalab.rules"},
}
# layers that run on a lab host from the copied sources: the standard library and metalab only
STDLIB_ONLY = {"metalab.rules", "metalab.brokerapi", "metalab.host"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "metalab"
    return ".".join(parts[:2])


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) of every import that runs (imports under ``if TYPE_CHECKING:`` do not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[Tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for sub in child.orelse:
                    yield from visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                yield child.lineno, target
                for alias in child.names:  # "from metalab.host import guard" imports the module metalab.host.guard
                    yield child.lineno, f"{target}.{alias.name}"
            yield from visit(child)

    yield from visit(tree)


def sources() -> List[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


MODULES = {module_name(p) for p in sources()}


def metalab_target(name: str) -> str:
    """The metalab module an import names (``from metalab.host.guard import files`` names a module, ``from
    metalab.rules import USER_NAME`` an attribute of one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def test_the_layout_is_the_documented_one() -> None:
    top = sorted(p.name for p in SRC.iterdir() if p.name != "__pycache__")
    assert top == ["__init__.py", "brokerapi", "host", "labctl", "portal", "py.typed", "rules.py"], top


def test_each_layer_imports_only_what_it_may() -> None:
    problems = []
    for path in sources():
        me = module_name(path)
        mine = layer(me)
        for line, target in runtime_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            top = target.split(".")[0]
            if top == "ansible_collections":
                problems.append(f"{where}: imports {target} (src/ never imports the collection's plugins)")
            elif top == "metalab":
                other = layer(metalab_target(target))
                if other not in (mine, "metalab") and other not in ALLOWED.get(mine, set()):
                    problems.append(f"{where}: {mine} imports {target}")
            elif mine in STDLIB_ONLY and top not in STDLIB:
                problems.append(f"{where}: {mine} runs on lab hosts from copied sources but imports {target}")
    assert problems == []


def test_no_side_doors() -> None:
    """No sys.path edits or imports of files by path in src/ and plugins/ (the rules link is a plain import)."""
    problems = []
    for path in [*sources(), *sorted(PLUGINS.rglob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        for needle in ("sys.path", "spec_from_file_location", "SourceFileLoader", "importlib.machinery"):
            if needle in text:
                problems.append(f"{path.relative_to(ROOT)}: {needle}")
        if path.is_relative_to(PLUGINS):
            for line, target in runtime_imports_any(path):
                if target.split(".")[0] == "metalab":
                    problems.append(f"{path.relative_to(ROOT)}:{line}: plugins import {target}")
    assert problems == []


def runtime_imports_any(path: Path) -> Iterator[Tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.lineno, node.module or ""


def test_the_plugins_rules_are_the_package_rules() -> None:
    link = PLUGINS / "module_utils" / "rules.py"
    assert link.is_symlink() and os.path.samefile(link, SRC / "rules.py")
    assert os.readlink(link) == "../../src/metalab/rules.py"  # relative: it survives a clone and a galaxy build


def test_no_import_cycles() -> None:
    graph: Dict[str, Set[str]] = {}
    for path in sources():
        me = module_name(path)
        graph[me] = set()
        for _, target in runtime_imports(path):
            if target.split(".")[0] == "metalab":
                other = metalab_target(target)
                if other and other != me and not me.startswith(other + "."):  # a package's __init__ is not a cycle
                    graph[me].add(other)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert cycles == []


def test_no_test_double_ships() -> None:
    """Test doubles live with the tests: nothing in src/ simulates an engine, and the guard refuses one."""
    from metalab.host.guard.config import ConfigError, parse_config

    names = [p.name for p in sources() if "simulat" in p.name or "fake" in p.name]
    assert names == []
    with pytest.raises(ConfigError, match="unknown engine 'fake'"):
        parse_config({"users": {}, "runtime": {"engine": "fake"}})
    assert parse_config({"users": {}, "runtime": {"engine": "podman"}}).runtime.engine == "podman"


def test_long_files_say_why() -> None:
    """No file of src/ is over 400 lines without a reason at its top (its docstring says "over 400 lines")."""
    unexplained = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "over 400 lines" not in doc:
                unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert unexplained == []


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    """The import scanner sees what the layer test must refuse (so a scanner that sees nothing cannot pass)."""
    sample = SRC / "portal" / "app.py"
    found = {target for _, target in runtime_imports(sample)}
    assert "metalab.brokerapi.client" in found and "flask" in found
    guard_cli = SRC / "host" / "guard" / "cli.py"
    assert any(t.startswith("metalab.host.guard") for _, t in runtime_imports(guard_cli))
    drain = SRC / "host" / "guard" / "drain.py"
    assert "metalab.host.guard.sessions" not in {t for _, t in runtime_imports(drain)}  # TYPE_CHECKING only
    assert "metalab.host.guard.sessions" in {t for _, t in runtime_imports_any(drain)}
