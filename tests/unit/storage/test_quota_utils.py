"""quota: sizes, quota reports, mount options, fstab editing and the enforceability verdict."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.metalab.lab.plugins.module_utils import quota

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GiB = 1024**3


@pytest.mark.parametrize(
    "text, expected",
    [("15G", 15 * GiB), ("15GiB", 15 * GiB), ("500M", 500 * 1024**2), ("1.5T", int(1.5 * 1024**4)), ("64K", 65536)],
)
def test_parse_size(text, expected):
    assert quota.parse_size(text) == expected


@pytest.mark.parametrize("text", ["15GG", "15GB", "15", "G", "-1G", "0G", "", "15 gigs", None, True, 15])
def test_parse_size_refuses(text):
    with pytest.raises(quota.SizeError):
        quota.parse_size(text)


def test_size_helpers():
    assert quota.size_to_kib(15 * GiB) == 15728640
    assert quota.size_to_kib(1) == 1
    assert quota.human_size(15 * GiB) == "15G"
    assert quota.human_size(int(1.5 * 1024**4)) == "1536G"
    assert quota.human_size(1536) == "1.5K"


def test_xfs_report():
    report = quota.parse_xfs_quota_report((FIXTURES / "xfs_quota_report.txt").read_text())
    assert report[20000] == {"used_kib": 1052, "soft_kib": 0, "hard_kib": 15728640}
    assert report[20001]["used_kib"] == 15728640
    assert set(report) == {0, 20000, 20001, 20002}


def test_repquota_with_grace_column():
    report = quota.parse_repquota((FIXTURES / "repquota.txt").read_text())
    assert report[20000] == {"used_kib": 1052, "soft_kib": 0, "hard_kib": 15728640}
    assert report[20001] == {"used_kib": 16000, "soft_kib": 10000, "hard_kib": 20000}
    assert 0 in report


MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1 /srv/metalab/homes xfs rw,relatime,attr2,inode64,logbufs=8,logbsize=32k,usrquota,prjquota 0 0
/dev/nvme1n1 /srv/with\\040space ext4 rw,relatime 0 0
"""


def test_mounts_and_options():
    mounts = quota.parse_mounts(MOUNTS)
    homes = quota.find_mount(mounts, "/srv/metalab/homes/")
    assert homes is not None and homes["source"] == "/dev/nvme0n1"
    assert quota.mount_enforces_user_quota("xfs", homes["options"])
    assert quota.find_mount(mounts, "/srv/with space")["fstype"] == "ext4"
    assert not quota.mount_enforces_user_quota("ext4", ["rw", "relatime"])
    assert not quota.mount_enforces_user_quota("xfs", ["rw", "usrquota", "uqnoenforce"])
    assert quota.mount_enforces_user_quota("ext4", ["rw", "usrquota"])


FSTAB = """# /etc/fstab: static file system information.
UUID=0b6b8a0e / ext4 errors=remount-ro 0 1
"""


def test_fstab_append_then_idempotent_then_replace():
    line = quota.fstab_line("UUID=abc", "/srv/metalab/homes", "xfs", "defaults,uquota,pquota")
    assert line == "UUID=abc /srv/metalab/homes xfs defaults,uquota,pquota 0 0"
    once, changed = quota.update_fstab(FSTAB, "/srv/metalab/homes", line)
    assert changed and once.endswith(line + "\n") and once.startswith(FSTAB)
    twice, changed = quota.update_fstab(once, "/srv/metalab/homes", line)
    assert not changed and twice == once
    other = quota.fstab_line("UUID=abc", "/srv/metalab/homes", "xfs", "defaults")
    replaced, changed = quota.update_fstab(other.join(["", "\n"]) + line + "\n", "/srv/metalab/homes", line)
    assert changed and replaced == line + "\n"  # the duplicate entry is dropped too


XFS_MOUNT = {"fstype": "xfs", "options": ["rw", "usrquota", "prjquota"]}
TOOLS = {"xfs_quota": True, "setquota": True, "repquota": True}


@pytest.mark.parametrize(
    "backend, kwargs, cause",
    [
        ("xfs", {"xfs_quota_kernel": True, "tools": TOOLS, "mount": XFS_MOUNT}, None),
        (None, {}, "homes are on the root filesystem"),
        ("xfs", {"xfs_quota_kernel": False, "tools": TOOLS, "mount": XFS_MOUNT}, "kernel without XFS quota support"),
        (
            "ext4",
            {"kernel_quota": False, "tools": TOOLS, "mount": {"fstype": "ext4", "options": ["usrquota"]}},
            "kernel without disk quota support",
        ),
        ("xfs", {"xfs_quota_kernel": True, "tools": {}, "mount": XFS_MOUNT}, "xfs_quota is not installed"),
        (
            "ext4",
            {"kernel_quota": True, "tools": {"setquota": True}, "mount": {"fstype": "ext4", "options": ["usrquota"]}},
            "repquota is not installed",
        ),
        (
            "xfs",
            {"xfs_quota_kernel": True, "tools": TOOLS, "mount": {"fstype": "xfs", "options": ["rw"]}},
            "mounted without quota options",
        ),
        ("xfs", {"xfs_quota_kernel": True, "tools": TOOLS, "mount": None}, "not mounted"),
    ],
)
def test_assess_quota(backend, kwargs, cause):
    verdict = quota.assess_quota(backend, **kwargs)
    if cause is None:
        assert verdict == {"enforceable": True, "causes": []}
    else:
        assert verdict["enforceable"] is False
        assert any(cause in c for c in verdict["causes"]), verdict
