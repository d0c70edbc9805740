# Copyright: metalab contributors
# Apache-2.0
"""Check the session settings on the controller with metalab-guard's own policy code."""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.metalab.lab.plugins.module_utils.rules import build_policy, parse_idle_timeouts

DOCUMENTATION = r"""
name: guard_policy_errors
short_description: What metalab-guard would refuse in the session settings, checked on the controller
description:
  - Builds the guard's session policy from C(lab_session_limits), C(lab_session_budgets), C(lab_session_warnings),
    C(lab_session_idle_timeout) and C(lab_session_preset), and each lab user's C(lab_session_overrides), with the
    rules the guard itself applies (C(plugins/module_utils/rules.py), the same file as C(src/metalab/rules.py),
    which the session_limits role installs on the hosts).
  - Returns one message per problem (an empty list when the guard accepts everything), so a play can refuse
    bad settings before it changes any host; on the host, C(guard.json) is validated by the same code again.
positional: overrides
options:
  _input:
    description: >-
      The C(policy) section of C(guard.json) (limits, budgets, warnings, idle_timeout, optional preset, min_start).
    type: dict
    required: true
  overrides:
    description: C(lab_session_overrides), lab user name to C({limits, budgets}).
    type: dict
    default: {}
"""

EXAMPLES = r"""
errors: "{{ {'limits': lab_session_limits, 'budgets': lab_session_budgets}
            | metalab.lab.guard_policy_errors(lab_session_overrides) }}"
"""

RETURN = r"""
_value:
  description: Messages naming the offending setting; empty when the settings are valid.
  type: list
  elements: str
"""


def guard_policy_errors(policy, overrides=None):
    if not isinstance(policy, Mapping):
        return ["session settings: expected a mapping (limits, budgets, warnings), got " + type(policy).__name__]
    errors = []
    try:
        parse_idle_timeouts(policy.get("idle_timeout"), "lab_session_idle_timeout")
    except ValueError as exc:
        errors.append(str(exc))
    try:
        build_policy(policy)
    except ValueError as exc:
        errors.append("lab_session_* settings: " + str(exc))
        return errors  # every override would repeat it
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        return ["lab_session_overrides: expected a mapping of lab user name to limits/budgets"]
    for name, raw in overrides.items():
        where = "lab_session_overrides." + str(name)
        if not isinstance(raw, Mapping):
            errors.append(where + ": expected a mapping with limits and/or budgets, got " + repr(raw))
            continue
        unknown = sorted(str(key) for key in raw if key not in ("limits", "budgets"))
        if unknown:
            errors.append(where + ": unknown key(s) " + ", ".join(unknown) + " (allowed: limits, budgets)")
        try:
            build_policy(policy, {"limits": raw.get("limits"), "budgets": raw.get("budgets")})
        except ValueError as exc:
            errors.append(where + ": " + str(exc))
    return errors


class FilterModule:
    def filters(self):
        return {"guard_policy_errors": guard_policy_errors}
