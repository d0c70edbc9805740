"""blockdev: lsblk/wipefs/blkid parsing and the facts built from them (captured-style outputs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import blockdev
from scripted import Scripted

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def facts_for(lsblk: str, signatures=None, holders=None, nonzero=None, sysfs=None):
    return blockdev.build_facts(
        blockdev.parse_lsblk(text(lsblk)), sysfs=sysfs, signatures=signatures, holders=holders, nonzero_data=nonzero
    )


def disk(facts, name):
    return next(d for d in facts["disks"] if d["name"] == name)


def test_vm_fresh_nvme_is_empty_and_virtio_root_is_not():
    facts = facts_for("lsblk_vm_fresh.json", sysfs={"nvme0n1": {"nsid": "1\n"}})
    nvme = disk(facts, "nvme0n1")
    assert nvme["nvme"] is True
    assert nvme["empty"] is True
    assert nvme["model"] == "QEMU NVMe Ctrl"
    assert nvme["serial"] == "metalab-nvme0"
    assert nvme["nsid"] == 1
    assert nvme["mountpoints"] == []
    vda = disk(facts, "vda")
    assert vda["nvme"] is False
    assert "is mounted (/)" in vda["not_empty_reasons"]
    assert [d["name"] for d in facts["nvme_namespaces"]] == ["nvme0n1"]


def test_metal_partitions_lvm_and_signature():
    facts = facts_for(
        "lsblk_metal.json",
        signatures={"nvme3n1": blockdev.parse_wipefs_json(text("wipefs_xfs_scratch.json"))},
        holders={"nvme0n1": ["dm-0"]},
    )
    boot = disk(facts, "nvme0n1")
    assert [p["name"] for p in boot["partitions"]] == ["nvme0n1p1", "nvme0n1p2", "nvme0n1p3"]
    assert boot["partitions"][0]["mountpoints"] == ["/boot/efi"]
    assert set(boot["all_mountpoints"]) == {"/boot/efi", "/boot", "/"}
    assert "lvm:ubuntu--vg-ubuntu--lv" in boot["used_by"]
    assert "holder:dm-0" in boot["used_by"]
    assert boot["empty"] is False
    assert any(r.startswith("has a partition table (gpt)") for r in boot["not_empty_reasons"])
    scratch = disk(facts, "nvme3n1")
    assert scratch["empty"] is False
    assert scratch["not_empty_reasons"] == ["carries a signature (xfs)"]
    assert scratch["signatures"][0]["label"] == "scratch"
    assert disk(facts, "nvme1n1")["empty"] is True
    assert disk(facts, "nvme2n1")["empty"] is True
    assert len(facts["nvme_namespaces"]) == 4


def test_signature_only_seen_by_probe_makes_device_not_empty():
    # lsblk reads udev's cache, which can lag behind: the probe is the authority.
    facts = facts_for(
        "lsblk_vm_fresh.json", signatures={"nvme0n1": blockdev.parse_wipefs_json(text("wipefs_gpt.json"))}
    )
    nvme = disk(facts, "nvme0n1")
    assert nvme["empty"] is False
    assert nvme["not_empty_reasons"] == ["carries a signature (PMBR, gpt)"]


def test_nonzero_data_without_signature_is_not_empty():
    facts = facts_for("lsblk_vm_fresh.json", nonzero={"nvme0n1": True})
    assert disk(facts, "nvme0n1")["not_empty_reasons"] == ["holds data (the first MiB is not zeroes)"]


def test_old_lsblk_strings_mountpoint_and_md_members():
    facts = facts_for("lsblk_old_strings.json")
    sda = disk(facts, "sda")
    assert sda["size"] == 500107862016
    assert sda["ro"] is False
    assert sda["nvme"] is False
    assert sda["all_mountpoints"] == ["/data"]
    assert "raid1:md0" in sda["used_by"]
    sdb = disk(facts, "sdb")
    assert "raid1:md0" in sdb["used_by"]
    assert facts["nvme_namespaces"] == []
    # the rom is not a disk
    assert {d["name"] for d in facts["disks"]} == {"sda", "sdb"}


def test_mounted_reused_volume():
    facts = facts_for("lsblk_reused.json")
    nvme = disk(facts, "nvme0n1")
    assert nvme["mountpoints"] == ["/srv/metalab/homes"]
    assert nvme["label"] == "metalab-home"
    assert blockdev.is_metalab_volume(nvme, "metalab-home", "/srv/metalab/homes")


@pytest.mark.parametrize(
    "out, expected",
    [
        ("", []),
        ("DEVNAME=/dev/nvme0n1\nUUID=abc\nTYPE=xfs\nLABEL=metalab-home\nUSAGE=filesystem\n", ["xfs"]),
        ("DEVNAME=/dev/nvme0n1\nPTUUID=1234\nPTTYPE=gpt\n", ["gpt"]),
    ],
)
def test_blkid_probe(out, expected):
    assert [s["type"] for s in blockdev.parse_blkid_export(out)] == expected


def test_lsblk_old_columns_detection():
    assert blockdev.lsblk_needs_old_columns("lsblk: unknown column: MOUNTPOINTS")
    assert not blockdev.lsblk_needs_old_columns("lsblk: permission denied")


def test_collect_falls_back_to_old_columns_and_blkid(tmp_path):
    old = text("lsblk_old_strings.json")
    run = Scripted(
        [
            (
                ["lsblk", "--json", "--bytes", "--output", blockdev.LSBLK_COLUMNS],
                (1, "", "lsblk: unknown column: MOUNTPOINTS\n"),
            ),
            (["lsblk"], (0, old, "")),
            (["wipefs"], (1, "", "wipefs: unrecognized option '--json'\n")),
            (["blkid", "-p", "-o", "export", "/dev/sda"], (0, "PTTYPE=dos\n", "")),
            (["blkid"], (2, "", "")),
        ]
    )

    def read_file(path):
        if path.endswith("/device/model"):
            return "Samsung SSD 860\n"
        raise FileNotFoundError(path)

    def listdir(path):
        if path == "/sys/class/block/sda1/holders":
            return ["md0"]
        raise FileNotFoundError(path)

    facts = blockdev.collect(run, read_file, listdir, read_head=lambda path: b"\0" * 16)
    assert run.calls[1][-1] == blockdev.LSBLK_COLUMNS_OLD
    assert sum(1 for c in run.calls if c[0] == "wipefs") == 1  # given up after the first refusal
    sda = disk(facts, "sda")
    assert sda["signatures"][0]["type"] == "dos"
    assert "holder:md0" in sda["used_by"]
    assert all(c[0] in ("lsblk", "wipefs", "blkid") for c in run.calls)  # read-only probes only


def test_collect_fails_when_lsblk_fails():
    run = Scripted([(["lsblk"], (32, "", "lsblk: failed to access sysfs directory"))])
    with pytest.raises(RuntimeError, match="lsblk failed"):
        blockdev.collect(run, lambda p: None, lambda p: [])
