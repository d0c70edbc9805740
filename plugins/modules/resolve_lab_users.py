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
  - Sets the fact C(lab_users_resolved), the normalised list every role, template and the guard configuration
    read - one record per entry with C(name), C(login) (prefix and name), C(home), C(quota) (text),
    C(quota_bytes), C(gpu), C(state), C(uid) (or null), C(comment) and C(email) (or null).
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
  description: C(lab_users_resolved), the normalised list.
  returned: success
  type: dict
"""
