"""Every plugin's DOCUMENTATION, EXAMPLES and RETURN is YAML that parses (ansible-doc and ansible-lint read them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
FILES = sorted(p for kind in ("modules", "filter", "action") for p in (PLUGINS / kind).glob("*.py"))


def _doc_strings(path: Path) -> dict:
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_documentation_parses(path: Path) -> None:
    docs = _doc_strings(path)
    if path.parent.name == "modules":
        assert {"DOCUMENTATION", "EXAMPLES", "RETURN"} <= set(docs), f"{path.name} lacks a documentation block"
    for name, text in docs.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.name} {name}: {exc}")
    if "DOCUMENTATION" in docs:
        doc = yaml.safe_load(docs["DOCUMENTATION"])
        assert isinstance(doc, dict) and (doc.get("module") or doc.get("name")), f"{path.name}: no module/name"


def test_the_check_sees_a_broken_block(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    # A colon and a space on the continuation line of a plain scalar: the mistake this test was written after.
    broken.write_text(
        'DOCUMENTATION = r"""\nmodule: x\ndescription:\n  - Takes the list\n    (resolved): it does\n"""\n'
    )
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(_doc_strings(broken)["DOCUMENTATION"])
