# Copyright: metalab contributors
# Apache-2.0
"""The lab layout against the hosts: a home host change that would leave the files behind (lab_users' preflight)."""

from __future__ import annotations

from ansible.utils.display import Display
from ansible_collections.metalab.lab.plugins.module_utils.rules import home_conflicts

DOCUMENTATION = r"""
name: lab_home_conflicts
short_description: Lab users whose files are on another host than their home host
description:
  - Checks C(lab_users_lab) against what the play's hosts hold (each host's lab accounts and homes, read by the
    lab_users role's read-only probe) with the rule of C(plugins/module_utils/rules.py) (C(home_conflicts)).
  - Returns one message per present user whose home host holds nothing of her while another host of the play
    holds her account or home (changing a home host is a move, C(labctl users move)). A host that still holds the
    account or home of a user homed elsewhere is only a warning, shown as an Ansible warning; nothing is deleted.
positional: found
options:
  _input:
    description: C(lab_users_lab).
    type: list
    elements: dict
    required: true
  found:
    description: Host -> C({accounts, homes}), the lab user names with an account and with a home on that host.
    type: dict
    required: true
"""

EXAMPLES = r"""
errors: "{{ lab_users_lab | metalab.lab.lab_home_conflicts(found) }}"
"""

RETURN = r"""
_value:
  description: The messages; empty when every user's files are on her home host (or nowhere yet).
  type: list
  elements: str
"""


def lab_home_conflicts(lab_users, found):
    errors, warnings = home_conflicts(list(lab_users or []), dict(found or {}))
    for warning in warnings:
        Display().warning(warning)
    return errors


class FilterModule:
    def filters(self):
        return {"lab_home_conflicts": lab_home_conflicts}
