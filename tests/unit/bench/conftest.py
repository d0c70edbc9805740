"""The benchmarks' scripts (benchmarks/*.py are scripts, not a package), loaded as modules for their unit tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"metalab_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load_bench():
    """load(NAME): benchmarks/NAME.py as a module (a fixture: the suites' conftest modules share one import name)."""
    return load


@pytest.fixture(scope="module")
def run():
    """benchmarks/run.py."""
    return load("run")
