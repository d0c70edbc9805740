"""The roles' argument specs and the generator of docs/roles/ (tools/role_docs.py), for the documentation tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Dict

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("role_docs", ROOT / "tools" / "role_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def role_docs() -> ModuleType:
    return _load_tool()


@pytest.fixture(scope="session")
def specs() -> Dict[str, Dict[str, Any]]:
    """{role: {entry point: spec}} of every role that has a meta/argument_specs.yml."""
    out = {}
    for path in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        out[path.parents[1].name] = yaml.safe_load(path.read_text())["argument_specs"]
    return out


@pytest.fixture(scope="session")
def documented(specs: Dict[str, Dict[str, Any]]) -> Dict[str, set]:
    """{variable: roles whose argument spec documents it}."""
    out: Dict[str, set] = {}
    for role, entries in specs.items():
        for spec in entries.values():
            for name in spec.get("options") or {}:
                out.setdefault(name, set()).add(role)
    return out
