"""GPU runtimes need CDI (podman >= 4.1): the rule, its filter, and session_limits' preflight in a play.

Ubuntu 22.04 ships podman 3.4: a GPU host there is refused at preflight with the reason and the way out; a CPU-only
host (no GPUs for runtimes) never asks podman anything. The play runs on the controller with a fake podman.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible_collections.metalab.lab.plugins.filter.platform import FilterModule
from ansible_collections.metalab.lab.plugins.module_utils import rules
from local_play import WRITE_REPORT, reports, run_local_play

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "output", ["podman version 4.1.0", "podman version 4.3.1", "podman version 4.9.3", "podman version 5.2.2"]
)
def test_podman_with_cdi_has_no_problem(output):
    assert rules.podman_cdi_problem(output) is None
    assert FilterModule().filters()["podman_cdi_problem"](output) == ""


@pytest.mark.parametrize(("output", "version"), [("podman version 3.4.4", "3.4.4"), ("podman version 4.0.2", "4.0.2")])
def test_podman_without_cdi_is_refused_with_the_version_and_the_way_out(output, version):
    problem = rules.podman_cdi_problem(output)
    assert problem == (
        f"podman {version} has no CDI support and GPU runtimes need it (podman >= 4.1): no GPU runtime could start; "
        "use Ubuntu 24.04 (podman 4.9) or install podman >= 4.1 from another source, or keep the host CPU-only "
        "(nvidia_container_toolkit_enabled: false and session_limits_gpus: [])"
    )


def test_an_unreadable_version_is_refused_too():
    assert rules.podman_cdi_problem("") == "cannot read podman's version from '': GPU runtimes need podman >= 4.1 (CDI)"
    assert "'podman: bad'" in rules.podman_cdi_problem("podman: bad")


def test_the_minimum_is_the_one_docs_gpu_names():
    assert rules.CDI_MIN_PODMAN == (4, 1)
    assert "podman < 4.1" in (ROOT / "docs" / "gpu.md").read_text()


PLAYBOOK = (
    """
- name: session_limits' preflight alone, with a fake podman
  hosts: all
  gather_facts: false
  tasks:
    - name: Fake the facts the preflight reads
      ansible.builtin.set_fact:
        distribution: Ubuntu
        distribution_major_version: "22"
        distribution_version: "22.04"
        cacheable: true
    - name: Point the preflight at the fake podman (a fact outranks the role's vars)
      ansible.builtin.set_fact:
        __session_limits_podman: "{{ fake_podman }}"
    - name: Preflight
      block:
        - name: Preflight
          ansible.builtin.include_role:
            name: metalab.lab.session_limits
            tasks_from: preflight
        - name: Report
          ansible.builtin.set_fact:
            report:
              passed: true
              asked_podman: "{{ __session_limits_podman_version | default({'skipped': true}) is not skipped }}"
      rescue:
        - name: Report the failure
          ansible.builtin.set_fact:
            report: {failed_task: "{{ ansible_failed_task.name }}", msg: "{{ ansible_failed_result.msg }}"}
"""
    + WRITE_REPORT
)


@pytest.fixture(scope="module")
def play(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cdi")
    hosts = {}
    for name, version, gpus in (("gpu-podman34", "3.4.4", [0]), ("gpu-podman49", "4.9.3", [0, 1]),
                                ("cpu-podman34", "3.4.4", [])):  # fmt: skip
        fake = tmp / f"podman-{name}"
        fake.write_text(f"#!/bin/sh\necho 'podman version {version}'\n")
        fake.chmod(0o755)
        hosts[name] = {"fake_podman": str(fake), "session_limits_gpus": gpus}
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "lab_users": []},
            "hosts": hosts,
        }
    }
    done = run_local_play(tmp, inventory, PLAYBOOK)
    assert done.returncode == 0, done.stdout + done.stderr
    return reports(tmp, hosts)


def test_a_gpu_host_with_podman_3_4_is_refused_at_preflight(play):
    assert play["gpu-podman34"]["failed_task"] == "Preflight | Refuse GPU runtimes without CDI"
    assert play["gpu-podman34"]["msg"] == "gpu-podman34: " + rules.podman_cdi_problem("podman version 3.4.4")


def test_a_gpu_host_with_podman_4_9_passes(play):
    assert play["gpu-podman49"] == {"passed": True, "asked_podman": True}


def test_a_cpu_host_with_podman_3_4_passes_without_asking_podman(play):
    assert play["cpu-podman34"] == {"passed": True, "asked_podman": False}
