"""metalab.lab.common in a play: a role used alone still refuses an unsupported platform, loads its platform
variables and gets the proxy environment (one ansible-playbook run on the controller, facts faked per host)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import pytest
from local_play import WRITE_REPORT, reports, run_local_play

ROOT = Path(__file__).resolve().parents[3]

# Each host is the controller itself with the facts of another platform.
INVENTORY = {
    "all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "hosts": {
            "debian12": {"fake": ["Debian", "12", "12.8"], "lab_http_proxy": "http://proxy.example:3128"},
            "ubuntu24": {"fake": ["Ubuntu", "24", "24.04"]},
            "amazon2023": {"fake": ["Amazon", "2023", "2023.6.20241212"]},
            "amazon2": {"fake": ["Amazon", "2", "2"]},
            "debian11": {"fake": ["Debian", "11", "11.9"]},
        },
    }
}

# The way playbooks/tasks/check_settings.yml uses a role before the roles run: one task file of it, alone.
PLAYBOOK = (
    """
- name: A role's validation alone, on faked platforms
  hosts: all
  gather_facts: false
  tasks:
    - name: Fake the distribution facts
      ansible.builtin.set_fact:
        distribution: "{{ fake[0] }}"
        distribution_major_version: "{{ fake[1] }}"
        distribution_version: "{{ fake[2] }}"
        cacheable: true
    - name: Check the portal settings
      block:
        - name: Check the portal settings
          ansible.builtin.include_role:
            name: metalab.lab.portal
            tasks_from: validate
            public: true
        - name: Report
          ansible.builtin.set_fact:
            report:
              env: "{{ lab_proxy_env }}"
              portal_packages: "{{ __portal_packages }}"
              frontdoor_default_site: "{{ __frontdoor_default_site }}"
              nvidia_note: "{{ __nvidia_driver_platform_note | default('') }}"
      rescue:
        - name: Report the failure
          ansible.builtin.set_fact:
            report:
              failed_task: "{{ ansible_failed_task.name }}"
              msg: "{{ ansible_failed_result.msg }}"
"""
    + WRITE_REPORT
)


@pytest.fixture(scope="module")
def play(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, dict]:
    tmp = tmp_path_factory.mktemp("common")
    done = run_local_play(tmp, INVENTORY, PLAYBOOK)
    assert done.returncode == 0, done.stdout + done.stderr
    return reports(tmp, INVENTORY["all"]["hosts"])


def failure(result: dict) -> str:
    assert result.get("failed_task") == "Refuse platforms that metalab does not support", result
    return result["msg"]


def report(result: dict) -> dict:
    assert "failed_task" not in result, result
    return result


def test_unsupported_platforms_are_refused_before_the_roles_own_checks(play):
    assert failure(play["amazon2"]) == (
        "Amazon Linux 2 is past its end of support and its Python is too old for current ansible-core; "
        "use Amazon Linux 2023"
    )
    assert failure(play["debian11"]) == (
        "Debian 11.9 is not supported by metalab; supported: Ubuntu 22.04/24.04, Debian 12, Amazon Linux 2023"
    )


def test_platform_variables_of_every_role_are_loaded(play):
    debian, amazon = report(play["debian12"]), report(play["amazon2023"])
    assert debian["portal_packages"] == ["python3-venv", "python3-packaging"]
    assert amazon["portal_packages"] == ["python3-packaging"]
    assert debian["frontdoor_default_site"] == "/etc/nginx/sites-enabled/default"
    assert amazon["frontdoor_default_site"] == ""
    # vars/<Distribution>_<major>.yml too
    assert debian["nvidia_note"] == "Debian_12 (apt, CUDA repository flat suite)"
    assert report(play["ubuntu24"])["nvidia_note"] == "Ubuntu_24 (apt, CUDA repository flat suite)"


def test_proxy_environment_in_both_spellings_and_empty_without_a_proxy(play):
    proxy, no_proxy = "http://proxy.example:3128", "localhost,127.0.0.1,::1"
    assert report(play["debian12"])["env"] == {
        "http_proxy": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "no_proxy": no_proxy,
        "NO_PROXY": no_proxy,
    }
    assert report(play["ubuntu24"])["env"] == {}
