#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
---
module: block_facts
short_description: Block devices (NVMe namespaces first) as facts, and the homes device metalab would pick
description:
  - Reads C(lsblk --json --bytes) (falling back to the C(MOUNTPOINT) column of util-linux older than 2.37),
    C(/sys/class/block/*/device/{model,serial}) and C(nsid), and probes signatures with
    C(wipefs --no-act --json) (or C(blkid -p) where wipefs has no JSON output).
  - Reports for every disk its partitions, signatures, mount points, holders and whether it is empty
    (no partition table, no signature, no partitions, not mounted, not used by LVM/md/dm, first MiB zeroes).
  - With O(homes_device) set, also returns the device the C(storage) role would use and what it would do
    with it, or the reason it cannot choose. Never changes anything.
version_added: 0.1.0
author: metalab contributors
options:
  homes_device:
    description: C(auto), C(none) or a device path, as in C(lab_homes_device). Omit to skip the selection.
    type: str
  homes_root:
    description: Mount point of the homes volume; a device mounted there is the metalab volume.
    type: path
    default: /srv/metalab/homes
  homes_label:
    description: Filesystem label of the metalab homes volume.
    type: str
    default: metalab-home
  allow_format:
    description: Whether a named device holding data may be formatted (C(lab_homes_allow_format)).
    type: bool
    default: false
  check_data:
    description: Read the first MiB of each unmounted disk and count non-zero data as "not empty".
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
notes:
  - Needs root for the signature probe and the data check.
"""

EXAMPLES = r"""
- name: Find the homes device
  metalab.lab.block_facts:
    homes_device: "{{ lab_homes_device }}"
    allow_format: "{{ lab_homes_allow_format }}"
  register: __storage_block
"""

RETURN = r"""
ansible_facts:
  description: C(metalab_block_devices) with C(disks) and C(nvme_namespaces).
  returned: always
  type: dict
  contains:
    metalab_block_devices:
      description: Disks with name, path, size, model, serial, nsid, nvme, pttype, fstype, label, uuid,
        mountpoints, partitions, signatures, used_by, empty and not_empty_reasons.
      type: dict
homes_selection:
  description:
    - device, action (format, reuse or none), wipe, size, reason; or error when none can be chosen.
    - With action none, size is that of the filesystem that holds homes_root.
  returned: when homes_device is set
  type: dict
  sample: {"device": "/dev/nvme0n1", "action": "format", "wipe": false, "size": 4294967296,
           "reason": "the only empty NVMe namespace", "error": null}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.blockdev import (  # noqa: E402
    filesystem_size,
    gather_for_module,
    selection_or_error,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "homes_device": {"type": "str"},
            "homes_root": {"type": "path", "default": "/srv/metalab/homes"},
            "homes_label": {"type": "str", "default": "metalab-home"},
            "allow_format": {"type": "bool", "default": False},
            "check_data": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.get_bin_path("lsblk", required=True)
    try:
        facts = gather_for_module(module, module.params["check_data"])
    except RuntimeError as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": False, "ansible_facts": {"metalab_block_devices": facts}}
    if module.params["homes_device"]:
        result["homes_selection"] = selection_or_error(
            facts,
            module.params["homes_device"],
            module.params["allow_format"],
            module.params["homes_root"],
            module.params["homes_label"],
        )
        if result["homes_selection"]["action"] == "none":
            # Homes on the root filesystem: its size bounds the quotas (checked before the play changes anything).
            result["homes_selection"]["size"] = filesystem_size(module.params["homes_root"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
