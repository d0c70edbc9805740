"""Shared helpers for the GPU tests: a fake sysfs tree, fixture reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def make_pci_device(
    root: Path,
    address: str,
    vendor: str = "0x10de",
    device: str = "0x1eb8",
    pci_class: str = "0x030200",
    numa_node: str | None = "-1",
    driver: str | None = "nvidia",
) -> None:
    """One device as the kernel lays it out: devices/<addr> a link into the device tree, driver a link."""
    real = root / "devices" / "pci0000:00" / address
    real.mkdir(parents=True)
    (real / "vendor").write_text(vendor + "\n")
    (real / "device").write_text(device + "\n")
    (real / "class").write_text(pci_class + "\n")
    if numa_node is not None:
        (real / "numa_node").write_text(numa_node + "\n")
    if driver is not None:
        drivers = root / "bus" / "pci" / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(drivers, real), real / "driver")
    links = root / "bus" / "pci" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(real, links), links / address)


@pytest.fixture
def sysfs(tmp_path: Path):
    """A factory filling a fake sysfs root; returns the root."""
    root = tmp_path / "sys"
    (root / "bus" / "pci" / "devices").mkdir(parents=True)

    def add(address: str, **kwargs):
        make_pci_device(root, address, **kwargs)
        return root

    add.root = root  # type: ignore[attr-defined]
    return add
