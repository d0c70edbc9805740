"""`labctl sandbox` against the real machine: two nspawn hosts, a VM with NVMe, and no trace after down."""

from __future__ import annotations

import subprocess
import tempfile
import time

import pytest
from conftest import labctl, ssh, up
from traces import snapshot


def _wait_settled(state_dir, before, seconds=10):
    deadline = time.monotonic() + seconds
    after = snapshot(state_dir)
    while after != before and time.monotonic() < deadline:
        time.sleep(0.5)
        after = snapshot(state_dir)
    return after


def test_two_nspawn_hosts_answer_ansible_and_leave_no_trace(state_dir):
    before = snapshot(state_dir)
    a = up("sbx-a")
    b = up("sbx-b")
    assert a["kind"] == b["kind"] == "nspawn"
    assert a["ansible_host"] != b["ansible_host"], "each sandbox has its own address"
    for key in ("name", "ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file"):
        assert key in a

    # up is idempotent per name: same host, nothing new.
    assert up("sbx-a") == a

    inventory = labctl("inventory").stdout
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as handle:
        handle.write(inventory)
        handle.flush()
        ping = subprocess.run(
            ["ansible", "-i", handle.name, "all", "-m", "ansible.builtin.ping"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count("SUCCESS") == 2

    # The admin has sudo, as on a freshly installed server; systemd really runs.
    result = ssh(a, "sudo -n true && systemctl is-system-running --wait; hostname")
    assert result.stdout.split() == ["running", "sbx-a"], result.stdout + result.stderr

    during = snapshot(state_dir)
    assert len(during["processes"]) >= 4, "two nspawn hosts and two proxies"
    assert during["netns"]

    labctl("down", "sbx-a", "sbx-b")
    assert _wait_settled(state_dir, before) == before
    assert "sbx-a" not in labctl("list", "--json").stdout


def test_vm_has_the_requested_nvme_namespace_and_a_quota_kernel(state_dir):
    before = snapshot(state_dir)
    vm = up("sbx-vm", "--vm", "--nvme-size", "2G")
    try:
        assert vm["kind"] == "vm" and vm["ansible_host"] == "127.0.0.1"
        result = ssh(vm, "lsblk -d -b -n -o NAME,SIZE,MODEL /dev/nvme0n1; grep -h '^CONFIG_QUOTA=' /boot/config-*")
        assert result.returncode == 0, result.stderr
        name, size, *model = result.stdout.splitlines()[0].split()
        assert name == "nvme0n1"
        assert int(size) == 2 * 1024**3
        assert " ".join(model) == "QEMU NVMe Ctrl"
        assert "CONFIG_QUOTA=y" in result.stdout
        assert any("qemu-system-x86_64" in p for p in snapshot(state_dir)["processes"]), "the trace check sees the VM"
    finally:
        labctl("down", "sbx-vm")
    assert _wait_settled(state_dir, before) == before


def test_a_boot_that_fails_half_way_leaves_nothing(state_dir):
    """A VM whose disks, ports and qemu process are made, then whose SSH does not answer in time (two seconds: a VM
    without KVM takes 30 s or more to boot): it is taken down again, and the error says why."""
    before = snapshot(state_dir)
    result = labctl("up", "sbx-half", "--vm", "--boot-timeout", "2", check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no SSH answer" in result.stderr and "within 2 s" in result.stderr, result.stderr
    assert "sbx-half" not in labctl("list", "--json").stdout
    assert _wait_settled(state_dir, before) == before
    # With time to boot, the same name comes up: nothing of the failed boot is in the way.
    try:
        labctl("up", "sbx-half")
        assert "sbx-half" in labctl("list", "--json").stdout
    finally:
        labctl("down", "sbx-half")
    assert _wait_settled(state_dir, before) == before


def test_bad_names_are_refused_before_anything_starts(state_dir):
    before = snapshot(state_dir)
    result = labctl("up", "bad/name", check=False)
    assert result.returncode == 2 and "invalid sandbox name" in result.stderr
    assert snapshot(state_dir) == before


@pytest.mark.parametrize("args", [["up", "x", "--kind", "nspawn", "--nvme-size", "2G"]])
def test_bad_input_is_one_line(state_dir, args):
    result = labctl(*args, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
