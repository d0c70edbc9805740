"""gpu.read_pci_gpus on fake sysfs trees."""

from __future__ import annotations

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import gpu


def test_no_pci_tree_means_no_gpus(tmp_path):
    assert gpu.read_pci_gpus(str(tmp_path / "nothing")) == []


def test_t4_without_driver(sysfs):
    sysfs("0000:00:1e.0", device="0x1eb8", driver=None)
    sysfs("0000:00:1f.0", vendor="0x8086", device="0x7010", pci_class="0x010185")  # IDE controller
    assert gpu.read_pci_gpus(str(sysfs.root)) == [
        {
            "pci_address": "0000:00:1e.0",
            "vendor_id": "0x10de",
            "device_id": "0x1eb8",
            "pci_class": "0x0302",
            "model_hint": "Tesla T4",
            "numa_node": None,
            "kernel_driver": None,
        }
    ]


def test_hgx_board_lists_gpus_not_nvswitches_or_audio(sysfs):
    for address, numa in (("0000:18:00.0", "0"), ("0000:2a:00.0", "0"), ("0000:ba:00.0", "1")):
        sysfs(address, device="0x2330", numa_node=numa)
    sysfs("0000:05:00.0", device="0x22a3", pci_class="0x068000", driver=None)  # NVSwitch bridge
    sysfs("0000:01:00.1", device="0x10fa", pci_class="0x040300", driver="snd_hda_intel")  # HDMI audio
    found = gpu.read_pci_gpus(str(sysfs.root))
    assert [(g["pci_address"], g["numa_node"], g["kernel_driver"]) for g in found] == [
        ("0000:18:00.0", 0, "nvidia"),
        ("0000:2a:00.0", 0, "nvidia"),
        ("0000:ba:00.0", 1, "nvidia"),
    ]
    assert {g["model_hint"] for g in found} == {"NVIDIA H100 80GB HBM3"}


@pytest.mark.parametrize(
    ("pci_class", "driver", "expected_driver"),
    [
        ("0x030000", "nouveau", "nouveau"),  # VGA-class board still on nouveau
        ("0x030200", "vfio-pci", "vfio-pci"),  # passed through to a VM
    ],
)
def test_bound_driver_reported(sysfs, pci_class, driver, expected_driver):
    sysfs("0000:3b:00.0", device="0x20b0", pci_class=pci_class, driver=driver, numa_node=None)
    (found,) = gpu.read_pci_gpus(str(sysfs.root))
    assert found["kernel_driver"] == expected_driver
    assert found["numa_node"] is None
    assert found["pci_class"] == pci_class[:6]


def test_unknown_device_id_has_no_hint(sysfs):
    sysfs("0000:01:00.0", device="0x9999")
    assert gpu.read_pci_gpus(str(sysfs.root))[0]["model_hint"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:00:1E.0", "0000:00:1e.0"),
        ("0000:3b:00.0", "0000:3b:00.0"),
        ("00000001:C1:00.0", "0001:c1:00.0"),
        ("3B:00.0", "0000:3b:00.0"),
    ],
)
def test_normalize_pci_address(raw, expected):
    assert gpu.normalize_pci_address(raw) == expected


def test_normalize_rejects_garbage():
    with pytest.raises(ValueError, match="not a PCI address"):
        gpu.normalize_pci_address("GPU-1234")
