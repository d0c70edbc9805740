#!/usr/bin/python
# Copyright: metalab contributors
# Apache License 2.0 (see LICENSE)
"""metalab.lab.nvidia_plan: NVIDIA repositories and packages for one platform."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_plan
short_description: Work out the NVIDIA repositories and pinned packages for a lab host
description:
  - Pure computation from the given platform facts of the CUDA repository (URL, signing key), the driver packages
    for a pinned branch (open or proprietary kernel modules, CUDA repository or distribution packages), and the
    NVIDIA container toolkit repository with the toolkit version pinned for the platform.
  - Refuses unsupported platforms (for example Amazon Linux 2) by name.
  - Used by the nvidia_driver and nvidia_container_toolkit roles; changes nothing.
version_added: 0.1.0
author: metalab contributors
options:
  distribution:
    description: C(ansible_distribution), for example C(Ubuntu), C(Debian), C(Amazon).
    type: str
    required: true
  version:
    description: C(ansible_distribution_version), for example C(24.04), C(12), C(2023).
    type: str
    required: true
  architecture:
    description: C(ansible_architecture), C(x86_64) or C(aarch64).
    type: str
    required: true
  kernel_release:
    description: C(ansible_kernel); chooses kernel headers and Ubuntu's precompiled module package.
    type: str
    default: ""
  source:
    description: C(cuda) installs from NVIDIA's CUDA repository, C(distribution) from the distribution's archive.
    type: str
    choices: [cuda, distribution]
    default: cuda
  branch:
    description: Driver branch, for example C(570) or C(580).
    type: str
    default: "580"
  flavor:
    description: C(open) or C(proprietary) kernel modules.
    type: str
    choices: [open, proprietary]
    default: open
  cuda_repo_base_url:
    description: Base URL of the CUDA repositories (a mirror may replace it).
    type: str
    default: https://developer.download.nvidia.com/compute/cuda/repos
  toolkit_repo_base_url:
    description: Base URL of the libnvidia-container repositories (a mirror may replace it).
    type: str
    default: https://nvidia.github.io/libnvidia-container
  toolkit_channel:
    description: Repository channel of the container toolkit (C(stable) or C(experimental)).
    type: str
    choices: [stable, experimental]
    default: stable
  toolkit_version:
    description: Container toolkit package version; empty for the platform's tested pin.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Computes only.
  diff_mode:
    support: none
    description: Changes nothing.
"""

EXAMPLES = r"""
- name: Plan NVIDIA packages
  metalab.lab.nvidia_plan:
    distribution: "{{ ansible_facts['distribution'] }}"
    version: "{{ ansible_facts['distribution_version'] }}"
    architecture: "{{ ansible_facts['architecture'] }}"
    kernel_release: "{{ ansible_facts['kernel'] }}"
    branch: "570"
  register: __nvidia_driver_plan
"""

RETURN = r"""
plan:
  description: Platform, repositories and packages.
  returned: success
  type: dict
  contains:
    platform:
      description: C(id) (ubuntu2204, ubuntu2404, debian12, amzn2023), C(family) (apt or dnf) and architectures.
      type: dict
    cuda_repo:
      description:
        - CUDA repository (C(url), C(key_url), apt C(uris)/C(suites)/C(keyring) or dnf C(baseurl)/C(gpgkey)).
        - Null with source C(distribution).
      type: dict
    driver:
      description: C(packages), C(prerequisites), C(module_stream), C(dkms), C(branch), C(branch_pinned), C(notes).
      type: dict
    apt_driver_pin:
      description: apt preferences body holding the driver on its branch (apt with source C(cuda)), else null.
      type: str
    toolkit_repo:
      description: Container toolkit repository.
      type: dict
    toolkit:
      description: >-
        C(version), pinned C(packages), bare C(names), C(warnings); on dnf platforms C(versionlock)
        (C(name), C(line), C(regexp) per package), C(versionlock_plugin) and C(versionlock_list).
      type: dict
"""

# Ansible modules document themselves before importing (ansible-doc reads the strings).
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.nvidia_repos import (  # noqa: E402
    CUDA_REPO_BASE_URL,
    TOOLKIT_REPO_BASE_URL,
    render_plan,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "distribution": {"type": "str", "required": True},
            "version": {"type": "str", "required": True},
            "architecture": {"type": "str", "required": True},
            "kernel_release": {"type": "str", "default": ""},
            "source": {"type": "str", "choices": ["cuda", "distribution"], "default": "cuda"},
            "branch": {"type": "str", "default": "580"},
            "flavor": {"type": "str", "choices": ["open", "proprietary"], "default": "open"},
            "cuda_repo_base_url": {"type": "str", "default": CUDA_REPO_BASE_URL},
            "toolkit_repo_base_url": {"type": "str", "default": TOOLKIT_REPO_BASE_URL},
            "toolkit_version": {"type": "str", "default": ""},
            "toolkit_channel": {"type": "str", "choices": ["stable", "experimental"], "default": "stable"},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    params["toolkit_version"] = params["toolkit_version"] or None
    try:
        plan = render_plan(**params)
    except ValueError as exc:  # UnsupportedPlatform is a ValueError
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
