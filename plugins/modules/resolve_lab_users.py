#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
"""Documentation of metalab.lab.resolve_lab_users; the work is done by its action plugin on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resolve_lab_users
short_description: Resolve the lab_users list once, on the controller
description:
  - Validates the whole C(lab_users) list (names, reserved names, duplicates, quotas, uids, keys) with the rules
    of C(plugins/module_utils/rules.py) and fails naming every offending entry, before anything changes.
  - Checks the lab layout (C(validate_layout)) - each user's home host (the entry's C(host)) is a lab host, is given
    when the lab has more than one lab host, has GPUs (is in C(gpu_hosts)) for a C(gpu) user of a lab with more
    than one host, and every C(frontdoor_hosts) host is a lab host - naming each offending entry.
  - Sets the fact C(lab_users_lab), every user of the lab normalised - one record per entry with C(name), C(login)
    (prefix and name), C(home), C(quota) (text), C(quota_bytes), C(gpu), C(state), C(uid) (or null), C(comment),
    C(email) (or null) and C(host) (her home host) - and the fact C(lab_users_resolved), the records of the users
    homed on this host (every user in a single-host lab), which every role, template and the guard configuration
    act on.
  - Runs on the controller only (no connection to the host). The internal role C(metalab.lab.common) calls it
    once per play and host.
version_added: 0.2.0
author: metalab contributors
options:
  users:
    description: The C(lab_users) list.
    type: list
    elements: raw
    required: true
  prefix:
    description: Prefix of host account names (C(lab_users_prefix)).
    type: str
    default: lab-
  default_quota:
    description: Quota of entries without C(quota) (C(lab_users_default_quota); binary units, 15G = 15 GiB).
    type: str
    default: 15G
  homes_root:
    description: Directory holding the homes (C(lab_homes_root)); each home is C(<homes_root>/<name>).
    type: path
    default: /srv/metalab/homes
  lab_hosts:
    description:
      - The inventory names of the lab's hosts. Empty - the host running the task is the lab's only host.
    type: list
    elements: str
    default: []
  gpu_hosts:
    description: The lab hosts with GPUs (the inventory group C(gpu_hosts)).
    type: list
    elements: str
    default: []
  frontdoor_hosts:
    description: The hosts serving the lab's address (the inventory group C(lab_frontdoor)); each must be a lab host.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Resolve the lab users
  metalab.lab.resolve_lab_users:
    users: "{{ lab_users }}"
    prefix: "{{ lab_users_prefix }}"
"""

RETURN = r"""
ansible_facts:
  description: C(lab_users_resolved) (the users homed on this host) and C(lab_users_lab) (every user).
  returned: success
  type: dict
"""
