# Copyright: metalab contributors
# Apache-2.0
"""The resolved lab users' quotas against a homes volume (storage's preflight, before the play's first change)."""

from __future__ import annotations

from ansible.utils.display import Display
from ansible_collections.metalab.lab.plugins.module_utils.rules import volume_problems

DOCUMENTATION = r"""
name: lab_users_over_volume
short_description: Lab users whose quota does not fit the homes volume
description:
  - Checks the resolved lab users (C(lab_users_resolved)) against the size of the homes volume with the rule of
    C(plugins/module_utils/rules.py) (C(volume_problems)).
  - Returns one message per present user whose quota is larger than the volume (naming the user); an empty list
    when every quota fits. Quotas that add up to more than the volume are only a warning (overcommitment is how
    Studio Lab-style storage is usually sold), shown as an Ansible warning.
positional: volume_size
options:
  _input:
    description: C(lab_users_resolved).
    type: list
    elements: dict
    required: true
  volume_size:
    description: Size of the homes volume in bytes.
    type: int
    required: true
"""

EXAMPLES = r"""
errors: "{{ lab_users_resolved | metalab.lab.lab_users_over_volume(volume_bytes) }}"
"""

RETURN = r"""
_value:
  description: The messages; empty when every quota fits.
  type: list
  elements: str
"""


def lab_users_over_volume(resolved, volume_size):
    errors, warnings = volume_problems(list(resolved or []), int(volume_size))
    for warning in warnings:
        Display().warning(warning)
    return errors


class FilterModule:
    def filters(self):
        return {"lab_users_over_volume": lab_users_over_volume}
