"""homes_volume with scripted probes and commands: format once, reuse on rerun, check mode, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.module_utils import basic
from ansible_collections.metalab.lab.plugins.module_utils import blockdev
from ansible_collections.metalab.lab.plugins.modules import homes_volume

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UUID = "f3c1d2e4-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
OK_KERNEL = {
    "proc_filesystems": "nodev\tproc\n\txfs\n",
    "kernel_quota": True,
    "xfs_quota_kernel": True,
    "tools": {"xfs_quota": True, "setquota": True, "repquota": True},
}


@pytest.fixture
def env(tmp_path, monkeypatch, run_module):
    state = {"lsblk": "lsblk_vm_fresh.json", "kernel": OK_KERNEL}
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw,relatime 0 0\n")
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=0b6b8a0e / ext4 errors=remount-ro 0 1\n")
    root = tmp_path / "homes"
    calls = []

    def run_command(self, argv, **kwargs):
        calls.append(list(argv))
        if argv[0] == "blkid":
            return 0, "DEVNAME=/dev/nvme0n1\nUUID=" + UUID + "\nTYPE=xfs\nLABEL=metalab-home\n", ""
        if argv[:2] == ["mount", "-o"]:  # remount in place: the flags change, the mount stays
            lines = mounts.read_text().splitlines()
            target = argv[-1]
            for i, line in enumerate(lines):
                fields = line.split()
                if fields[1] == target:
                    extra = [o for o in argv[2].split(",") if o not in ("remount", "bind") and o not in fields[3]]
                    fields[3] = ",".join(fields[3].split(",") + extra)
                    lines[i] = " ".join(fields)
            mounts.write_text("\n".join(lines) + "\n")
            return 0, "", ""
        if argv[0] == "mount" and state.get("bind"):
            mounts.write_text(mounts.read_text() + "/dev/vda " + str(root) + " ext4 rw,relatime 0 0\n")
            return 0, "", ""
        if argv[0] == "mount":
            mounts.write_text(
                mounts.read_text()
                + "/dev/nvme0n1 "
                + str(root)
                + " xfs rw,nosuid,nodev,relatime,usrquota,prjquota 0 0\n"
            )
            state["lsblk"] = "lsblk_reused.json"
        return 0, "", ""

    def gather(module, check_data=True):
        text = (FIXTURES / state["lsblk"]).read_text().replace("/srv/metalab/homes", str(root))
        return blockdev.build_facts(blockdev.parse_lsblk(text))

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(homes_volume, "gather_for_module", gather)
    monkeypatch.setattr(homes_volume, "_kernel_and_tools", lambda module, backend: state["kernel"])
    monkeypatch.setattr(homes_volume, "MOUNTS_FILE", str(mounts))

    def call(check=False, **extra):
        args = {
            "device": "auto",
            "path": str(root),
            "fstab": str(fstab),
            "_ansible_check_mode": check,
            "_ansible_diff": True,
        }
        args.update(extra)
        calls.clear()
        return run_module(homes_volume.main, args)

    call.calls, call.state, call.fstab, call.root, call.mounts = calls, state, fstab, root, mounts
    return call


def test_check_mode_then_format_then_rerun_reuses(env):
    checked = env(check=True)
    assert checked.result["changed"] is True and not checked.failed
    assert env.calls == []
    assert "/srv" not in env.fstab.read_text() and str(env.root) not in env.fstab.read_text()

    first = env()
    assert not first.failed, first.result
    assert first.result["changed"] is True
    assert ["mkfs.xfs", "-L", "metalab-home", "/dev/nvme0n1"] in env.calls
    assert ["mount", str(env.root)] in env.calls
    assert "wipefs" not in [c[0] for c in env.calls]
    assert (
        "UUID=" + UUID + " " + str(env.root) + " xfs defaults,nosuid,nodev,uquota,pquota 0 0"
    ) in env.fstab.read_text()
    assert first.result["quota"] == {"enforceable": True, "causes": [], "backend": "xfs"}

    second = env()
    assert second.result["changed"] is False, second.result
    assert second.result["action"] == "reuse"
    assert not [c for c in env.calls if c[0].startswith("mkfs")]
    assert env(check=True).result["changed"] is False


def test_quota_kernel_missing_fails_before_mkfs(env):
    env.state["kernel"] = dict(OK_KERNEL, xfs_quota_kernel=False)
    result = env()
    assert result.failed
    assert "kernel without XFS quota support" in result.result["msg"]
    assert env.calls == []


def test_quota_not_required_warns_and_continues(env):
    env.state["kernel"] = dict(OK_KERNEL, xfs_quota_kernel=False)
    result = env(quota_required=False)
    assert not result.failed
    assert result.result["quota"]["enforceable"] is False


def test_none_means_root_filesystem_and_no_quota(env):
    assert env(device="none").failed
    result = env(device="none", quota_required=False)
    assert result.result["quota"]["backend"] is None
    assert env.root.is_dir()


def test_named_device_with_data_refused(env):
    env.state["lsblk"] = "lsblk_metal.json"
    result = env(device="/dev/nvme3n1")
    assert result.failed
    assert "lab_homes_allow_format: true" in result.result["msg"]
    assert env.calls == []


def test_named_device_with_data_allowed_is_wiped_first(env):
    env.state["lsblk"] = "lsblk_metal.json"
    result = env(device="/dev/nvme3n1", allow_format=True)
    assert not result.failed, result.result
    assert env.calls[:2] == [["wipefs", "--all", "/dev/nvme3n1"], ["mkfs.xfs", "-L", "metalab-home", "/dev/nvme3n1"]]


def test_mounted_without_quota_options_reported(env):
    env.state["lsblk"] = "lsblk_reused.json"
    env.fstab.write_text("UUID=" + UUID + " " + str(env.root) + " xfs defaults,uquota,pquota 0 0\n")
    env.mounts.write_text("/dev/nvme0n1 " + str(env.root) + " xfs rw,relatime 0 0\n")
    result = env()
    assert result.failed
    assert "mounted without quota options" in result.result["msg"]
    assert env.calls == []


def test_mounted_volume_without_nosuid_nodev_is_remounted_in_place(env):
    # A volume mounted before metalab asked for nosuid,nodev: remounted, never unmounted or reformatted.
    env.state["lsblk"] = "lsblk_reused.json"
    env.fstab.write_text("UUID=" + UUID + " " + str(env.root) + " xfs defaults,uquota,pquota 0 0\n")
    env.mounts.write_text("/dev/nvme0n1 " + str(env.root) + " xfs rw,relatime,usrquota,prjquota 0 0\n")
    checked = env(check=True)
    assert checked.result["changed"] is True and env.calls == []
    result = env()
    assert not result.failed, result.result
    assert result.result["changed"] is True
    assert env.calls == [["mount", "-o", "remount,nosuid,nodev", str(env.root)]]
    assert "defaults,nosuid,nodev,uquota,pquota" in env.fstab.read_text()
    assert "nosuid" in env.mounts.read_text() and "nodev" in env.mounts.read_text()
    again = env()
    assert again.result["changed"] is False and env.calls == []
    assert env(check=True).result["changed"] is False


def test_homes_on_the_root_filesystem_are_bind_mounted_nosuid_nodev(env):
    env.state["bind"] = True
    assert env(device="none", quota_required=False, check=True).result["changed"] is True
    assert env.calls == [] and str(env.root) not in env.fstab.read_text()
    result = env(device="none", quota_required=False)
    assert not result.failed, result.result
    assert result.result["changed"] is True
    assert (str(env.root) + " " + str(env.root) + " none bind,nosuid,nodev 0 0") in env.fstab.read_text()
    assert env.calls == [["mount", str(env.root)], ["mount", "-o", "remount,bind,nosuid,nodev", str(env.root)]]
    again = env(device="none", quota_required=False)
    assert again.result["changed"] is False and env.calls == []
    assert env(device="none", quota_required=False, check=True).result["changed"] is False


def test_nosuid_nodev_can_be_turned_off(env):
    result = env(device="none", quota_required=False, nosuid_nodev=False)
    assert not result.failed and env.calls == []
    assert str(env.root) not in env.fstab.read_text()
