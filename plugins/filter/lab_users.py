# Copyright: metalab contributors
# Apache-2.0
"""The names of the present lab users, for the roles that serve them (front door, guard, portal)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: present_lab_users
short_description: Names of the lab_users entries that are present
description:
  - The C(name) of every C(lab_users) entry whose C(state) is C(present), the default when it is not given.
  - Entries without C(state) come first, then those that say C(state=present), each group in list order. This is
    the order the roles rendered before the filter existed, so files listing the users (the front door's locations,
    guard.json) keep their bytes on an upgrade.
  - The entries are validated elsewhere (base's and storage's preflight); this only selects, and skips an entry
    without a name.
options:
  _input:
    description: C(lab_users).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
__frontdoor_users: "{{ lab_users | default([]) | metalab.lab.present_lab_users }}"
"""

RETURN = r"""
_value:
  description: The names of the present lab users.
  type: list
  elements: str
"""


def present_lab_users(users):
    # Entries without a name are skipped here: the lab_users validation names them (a run with --tags portal, say,
    # reaches this before that validation).
    named = [u for u in (users or []) if isinstance(u, dict) and isinstance(u.get("name"), str)]
    implicit = [u["name"] for u in named if "state" not in u]
    explicit = [u["name"] for u in named if "state" in u and u["state"] == "present"]
    return implicit + explicit


class FilterModule:
    def filters(self):
        return {"present_lab_users": present_lab_users}
