"""labctl's unit tests reach no host: the homes volume sizes that placement reads on the hosts are given here."""

from __future__ import annotations

from typing import Iterator

import pytest

from metalab.labctl import layout

TiB = 1024**4


@pytest.fixture(autouse=True)
def homes_volumes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int | None]]:
    """Every host's homes volume is 1T unless a test changes this mapping (None: not readable)."""
    sizes: dict[str, int | None] = {}
    monkeypatch.setattr(layout, "SIZES", lambda inventory, hosts: {h: sizes.get(h, TiB) for h in hosts})
    yield sizes
