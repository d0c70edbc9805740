"""blockdev.select_homes_device: the data safety rules, case by case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import blockdev

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = "/srv/metalab/homes"


def facts(name, signatures=None):
    devices = blockdev.parse_lsblk((FIXTURES / name).read_text())
    return blockdev.build_facts(devices, signatures=signatures)


def metal_with_one_empty():
    # nvme2n1 carries a GPT: only nvme1n1 stays empty
    gpt = blockdev.parse_wipefs_json((FIXTURES / "wipefs_gpt.json").read_text())
    return facts("lsblk_metal.json", signatures={"nvme2n1": gpt})


@pytest.mark.parametrize(
    "case, requested, allow_format, expected",
    [
        ("vm fresh: the one empty namespace", "auto", False, {"device": "/dev/nvme0n1", "action": "format"}),
        ("rerun: label and mount found", "auto", False, {"device": "/dev/nvme0n1", "action": "reuse"}),
        ("metal: one empty", "auto", False, {"device": "/dev/nvme1n1", "action": "format", "wipe": False}),
        ("named empty device", "/dev/nvme1n1", False, {"device": "/dev/nvme1n1", "action": "format"}),
        (
            "named formatted device allowed",
            "/dev/nvme3n1",
            True,
            {"device": "/dev/nvme3n1", "action": "format", "wipe": True},
        ),
        ("named metalab device never reformatted", "/dev/nvme0n1", True, {"action": "reuse"}),
        ("none", "none", False, {"device": None, "action": "none"}),
    ],
)
def test_selection(case, requested, allow_format, expected):
    source = {
        "vm fresh: the one empty namespace": lambda: facts("lsblk_vm_fresh.json"),
        "rerun: label and mount found": lambda: facts("lsblk_reused.json"),
        "metal: one empty": metal_with_one_empty,
        "named empty device": lambda: facts("lsblk_metal.json"),
        "named formatted device allowed": lambda: facts("lsblk_metal.json"),
        "named metalab device never reformatted": lambda: facts("lsblk_reused.json"),
        "none": lambda: facts("lsblk_vm_fresh.json"),
    }[case]()
    result = blockdev.select_homes_device(source, requested, allow_format=allow_format, homes_root=ROOT)
    for key, value in expected.items():
        assert result[key] == value, case


def test_auto_with_two_empty_lists_them_and_asks_to_name_one():
    with pytest.raises(blockdev.SelectionError) as err:
        blockdev.select_homes_device(facts("lsblk_metal.json"), "auto", homes_root=ROOT)
    msg = str(err.value)
    assert "found 2 empty NVMe namespaces" in msg
    assert "/dev/nvme1n1" in msg and "/dev/nvme2n1" in msg
    assert "S64HNE0T500001" in msg
    assert "name the one to use in lab_homes_device" in msg


def test_auto_with_none_empty_says_why_each_is_unusable():
    gpt = blockdev.parse_wipefs_json((FIXTURES / "wipefs_gpt.json").read_text())
    source = facts("lsblk_metal.json", signatures={"nvme1n1": gpt, "nvme2n1": gpt})
    with pytest.raises(blockdev.SelectionError) as err:
        blockdev.select_homes_device(source, "auto", homes_root=ROOT)
    msg = str(err.value)
    assert "no empty NVMe namespace" in msg
    assert "/dev/nvme0n1" in msg and "is mounted" in msg
    assert "/dev/nvme3n1" in msg and "carries a signature (xfs)" in msg
    assert "/dev/nvme1n1" in msg and "PMBR, gpt" in msg


def test_auto_without_any_nvme():
    with pytest.raises(blockdev.SelectionError, match="this host has no NVMe namespace"):
        blockdev.select_homes_device(facts("lsblk_old_strings.json"), "auto", homes_root=ROOT)


def test_named_formatted_device_refused_without_allow_format():
    with pytest.raises(blockdev.SelectionError) as err:
        blockdev.select_homes_device(facts("lsblk_metal.json"), "/dev/nvme3n1", homes_root=ROOT)
    msg = str(err.value)
    assert "/dev/nvme3n1 carries a signature (xfs)" in msg
    assert "lab_homes_allow_format: true" in msg


@pytest.mark.parametrize("device", ["/dev/nvme0n1", "/dev/nvme0n1p2", "/dev/sda"])
def test_mounted_or_in_use_refused_even_with_allow_format(device):
    source = facts("lsblk_old_strings.json") if device == "/dev/sda" else facts("lsblk_metal.json")
    with pytest.raises(blockdev.SelectionError, match="never formats a device that is mounted or in use"):
        blockdev.select_homes_device(source, device, allow_format=True, homes_root=ROOT)


def test_missing_device_named():
    with pytest.raises(blockdev.SelectionError, match="/dev/nvme9n1 does not exist"):
        blockdev.select_homes_device(facts("lsblk_metal.json"), "/dev/nvme9n1", homes_root=ROOT)


def test_by_id_link_resolved():
    result = blockdev.select_homes_device(
        facts("lsblk_metal.json"),
        "/dev/disk/by-id/nvme-SAMSUNG_MZQL23T8HCLS-00A07_S64HNE0T500001",
        homes_root=ROOT,
        resolved_path="/dev/nvme1n1",
    )
    assert result["device"] == "/dev/nvme1n1"


def test_rerun_after_format_reuses_by_label_when_unmounted():
    source = facts("lsblk_reused.json")
    source["disks"][1]["mountpoints"] = []
    result = blockdev.select_homes_device(source, "auto", homes_root=ROOT)
    assert result["action"] == "reuse"


def test_filesystem_size_of_a_path_not_made_yet_is_its_parents(tmp_path):
    stat = os.statvfs(tmp_path)
    assert blockdev.filesystem_size(str(tmp_path / "srv" / "metalab" / "homes")) == stat.f_blocks * stat.f_frsize > 0
    assert not (tmp_path / "srv").exists()
