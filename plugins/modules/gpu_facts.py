#!/usr/bin/python
# Copyright: metalab contributors
# Apache License 2.0 (see LICENSE)
"""metalab.lab.gpu_facts: NVIDIA GPUs from sysfs and nvidia-smi."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Discover NVIDIA GPUs from sysfs and, when the driver is installed, nvidia-smi
description:
  - Lists NVIDIA GPUs (PCI vendor C(0x10de), class C(0x0300) or C(0x0302)) from sysfs, without needing the driver;
    PCI address, device id, NUMA node and the kernel driver bound to each.
  - When C(nvidia-smi) exists, adds the driver and CUDA versions, and per GPU the name, UUID, memory, persistence
    mode, MIG mode (and MIG devices), ECC state and temperature.
  - Detects a driver/library version mismatch (a new driver installed, the old kernel module still loaded) and
    reports it as a pending reboot.
  - Read-only; never changes the host.
version_added: 0.1.0
author: metalab contributors
options:
  sysfs_root:
    description: Where sysfs is mounted. Tests point it at a fake tree.
    type: path
    default: /sys
  proc_root:
    description: Where procfs is mounted (C(driver/nvidia/version) gives the loaded kernel module version).
    type: path
    default: /proc
  nvidia_smi:
    description: Path of C(nvidia-smi); by default it is looked up in C(PATH).
    type: path
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
  facts:
    support: full
    description: Returns C(ansible_facts).
notes:
  - Standard library only; runs on the host's Python >= 3.9.
"""

EXAMPLES = r"""
- name: Discover GPUs
  metalab.lab.gpu_facts:

- name: Show what the driver sees
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts.metalab_gpus | map(attribute="name") | list }}
      on driver {{ ansible_facts.metalab_gpu_driver.version }}
  when: ansible_facts.metalab_gpu_present
"""

RETURN = r"""
ansible_facts:
  description: GPU facts.
  returned: always
  type: dict
  contains:
    metalab_gpus:
      description: One entry per NVIDIA GPU. Keys filled from nvidia-smi are null when the driver does not see the GPU.
      type: list
      elements: dict
      sample:
        - pci_address: "0000:00:1e.0"
          vendor_id: "0x10de"
          device_id: "0x1eb8"
          pci_class: "0x0302"
          model_hint: Tesla T4
          numa_node: null
          kernel_driver: nvidia
          driver_visible: true
          index: 0
          name: Tesla T4
          uuid: GPU-8a4e5c0b-2f6d-1c3e-7b9a-0d4f6e2a1b3c
          memory_total_mib: 15360
          driver_version: 570.133.20
          persistence_mode: true
          mig_mode: null
          mig_mode_pending: null
          mig_devices: []
          ecc_mode: enabled
          ecc_errors_uncorrected: 0
          temperature_c: 31
          compute_mode: Default
    metalab_gpu_present:
      description: Whether at least one NVIDIA GPU is on the PCI bus.
      type: bool
    metalab_gpu_count:
      description: NVIDIA GPUs on the PCI bus.
      type: int
    metalab_gpu_driver:
      description: Driver state.
      type: dict
      contains:
        installed:
          description: Whether nvidia-smi exists.
          type: bool
        loaded:
          description: Whether the nvidia kernel module is loaded.
          type: bool
        version:
          description: Driver version reported by nvidia-smi.
          type: str
        kernel_module_version:
          description: Version of the loaded kernel module (/proc/driver/nvidia/version).
          type: str
        kernel_module_flavor:
          description: C(open) or C(proprietary) kernel module.
          type: str
        cuda_version:
          description: Highest CUDA version the driver supports.
          type: str
        nvml_state:
          description: C(ok), C(not_installed), C(mismatch), C(no_driver), C(no_devices) or C(error).
          type: str
        nvml_library_version:
          description: User-space NVML version, reported on a mismatch.
          type: str
        reboot_required:
          description: A driver was installed or upgraded and the host must reboot to load it.
          type: bool
        message:
          description: What nvidia-smi said when it failed.
          type: str
"""

# Ansible modules document themselves before importing (ansible-doc reads the strings).
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.gpu import collect_gpu_facts  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "sysfs_root": {"type": "path", "default": "/sys"},
            "proc_root": {"type": "path", "default": "/proc"},
            "nvidia_smi": {"type": "path"},
        },
        supports_check_mode=True,
    )
    nvidia_smi = module.params["nvidia_smi"] or module.get_bin_path(
        "nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin"]
    )

    def run(argv):
        return module.run_command(argv, check_rc=False, environ_update={"LC_ALL": "C"})

    try:
        facts = collect_gpu_facts(run, nvidia_smi, module.params["sysfs_root"], module.params["proc_root"])
    except ValueError as exc:
        module.fail_json(msg=f"cannot parse nvidia-smi output: {exc}")
    module.exit_json(changed=False, ansible_facts=facts)


if __name__ == "__main__":
    main()
