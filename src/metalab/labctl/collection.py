"""Locate the metalab.lab collection that ships with this package."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The collection root: $METALAB_COLLECTION, else the checkout this package was installed from."""
    env = os.environ.get("METALAB_COLLECTION")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "galaxy.yml").is_file() and (parent / "roles").is_dir():
            return parent
    raise RuntimeError("cannot find the metalab collection; set METALAB_COLLECTION to the repository root")
