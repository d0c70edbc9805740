"""GPU roles on a lab host without an NVIDIA GPU: a clean skip, and a refusal when forced."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = ROOT / "tests/integration/playbooks/gpu_roles.yml"


def _play(host, *extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    inventory = host.backend.ansible_inventory
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, "--limit", host.backend.host, str(PLAYBOOK), *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert recap, result.stdout + result.stderr
    return result, dict(zip(("ok", "changed", "unreachable", "failed"), map(int, recap.groups())))


def test_gpu_roles_skip_cleanly_without_a_gpu(host):
    result, recap = _play(host)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap["changed"] == 0 and recap["failed"] == 0
    assert "no NVIDIA GPU on the PCI bus: NVIDIA driver not installed" in result.stdout
    assert "no NVIDIA GPU on the PCI bus: NVIDIA container toolkit not installed" in result.stdout
    assert not host.file("/etc/modprobe.d/metalab-nvidia.conf").exists


def test_forcing_the_driver_without_a_gpu_fails_before_any_change(host):
    before = host.run("ls -la --time-style=+%s /etc/modprobe.d /etc/apt/sources.list.d").stdout
    result, recap = _play(host, "-e", "nvidia_driver_force=true")
    assert result.returncode != 0
    assert recap["failed"] == 1 and recap["changed"] == 0
    assert "nvidia_driver_force" in result.stdout and "no NVIDIA GPU" in result.stdout
    assert host.run("ls -la --time-style=+%s /etc/modprobe.d /etc/apt/sources.list.d").stdout == before
