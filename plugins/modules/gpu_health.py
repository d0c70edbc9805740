#!/usr/bin/python
# Copyright: metalab contributors
# Apache License 2.0 (see LICENSE)
"""metalab.lab.gpu_health: judge a GPU host (driver, persistence, CDI spec)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_health
short_description: Check a lab host's NVIDIA GPUs, driver and CDI spec
description:
  - Compares the GPUs on the PCI bus with those the driver sees, reports a driver/library mismatch (reboot
    pending), persistence mode, uncorrected ECC errors and whether the CDI spec exists and lists the same GPUs
    for the driver version it was generated for.
  - On a host without an NVIDIA GPU it reports C(gpu_host=false) and C(ok=true).
  - Read-only.
version_added: 0.1.0
author: metalab contributors
options:
  cdi_spec:
    description: The CDI spec written by C(nvidia-ctk cdi generate).
    type: path
    default: /etc/cdi/nvidia.yaml
  cdi_state:
    description: JSON state file the nvidia_container_toolkit role writes (driver version the spec was made for).
    type: path
    default: /var/lib/metalab/nvidia-cdi.json
  require_cdi:
    description: Count a missing CDI spec as a problem.
    type: bool
    default: true
  require_persistence:
    description: Count a GPU with persistence mode off as a problem.
    type: bool
    default: true
  fail_on_problem:
    description: Fail the task when a problem is found (the report is returned either way).
    type: bool
    default: false
  sysfs_root:
    description: Where sysfs is mounted.
    type: path
    default: /sys
  proc_root:
    description: Where procfs is mounted.
    type: path
    default: /proc
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
"""

EXAMPLES = r"""
- name: Check GPU health
  metalab.lab.gpu_health:
  register: __gpu_health

- name: Fail when a GPU host is unhealthy
  metalab.lab.gpu_health:
    fail_on_problem: true
"""

RETURN = r"""
ok:
  description: No problem found.
  returned: always
  type: bool
gpu_host:
  description: At least one NVIDIA GPU is on the PCI bus.
  returned: always
  type: bool
summary:
  description: One line for the report.
  returned: always
  type: str
  sample: "4 GPU(s) on the bus, 4 seen by driver 570.133.20: healthy"
problems:
  description: Each problem, with what to do about it.
  returned: always
  type: list
  elements: str
gpu_warnings:
  description: Things to look at that do not make the host unhealthy.
  returned: always
  type: list
  elements: str
gpus_on_bus:
  description: NVIDIA GPUs on the PCI bus.
  returned: always
  type: int
gpus_visible:
  description: GPUs the driver sees.
  returned: always
  type: int
reboot_required:
  description: Driver/library mismatch; the host needs a reboot.
  returned: always
  type: bool
cdi:
  description: CDI spec state (present, current, missing and unexpected device names).
  returned: always
  type: dict
gpus:
  description: The per-GPU facts the verdict was made from (see metalab.lab.gpu_facts).
  returned: always
  type: list
  elements: dict
driver:
  description: The driver facts the verdict was made from (see metalab.lab.gpu_facts).
  returned: always
  type: dict
"""

# Ansible modules document themselves before importing (ansible-doc reads the strings).
import json  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.gpu import collect_gpu_facts, evaluate_health, parse_cdi_spec  # noqa: E402


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cdi_spec": {"type": "path", "default": "/etc/cdi/nvidia.yaml"},
            "cdi_state": {"type": "path", "default": "/var/lib/metalab/nvidia-cdi.json"},
            "require_cdi": {"type": "bool", "default": True},
            "require_persistence": {"type": "bool", "default": True},
            "fail_on_problem": {"type": "bool", "default": False},
            "sysfs_root": {"type": "path", "default": "/sys"},
            "proc_root": {"type": "path", "default": "/proc"},
        },
        supports_check_mode=True,
    )
    params = module.params
    nvidia_smi = module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin"])

    def run(argv):
        return module.run_command(argv, check_rc=False, environ_update={"LC_ALL": "C"})

    try:
        facts = collect_gpu_facts(run, nvidia_smi, params["sysfs_root"], params["proc_root"])
        spec_text = _read(params["cdi_spec"])
        spec = parse_cdi_spec(spec_text) if spec_text is not None else None
        state_text = _read(params["cdi_state"])
        state = json.loads(state_text) if state_text else None
    except (ValueError, OSError) as exc:
        module.fail_json(msg=f"cannot read GPU state: {exc}")
    report = evaluate_health(
        facts, spec, state, require_cdi=params["require_cdi"], require_persistence=params["require_persistence"]
    )
    # "warnings" is a reserved result key in Ansible (it becomes deprecation noise): return them as gpu_warnings.
    report["gpu_warnings"] = report.pop("warnings")
    report.update({"gpus": facts["metalab_gpus"], "driver": facts["metalab_gpu_driver"]})
    if params["fail_on_problem"] and not report["ok"]:
        module.fail_json(msg="GPU health: " + "; ".join(report["problems"]), changed=False, **report)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
