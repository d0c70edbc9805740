# Copyright: metalab contributors
# Apache-2.0
"""Action for metalab.lab.resolve_lab_users: resolve the lab_users list once, on the controller."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible_collections.metalab.lab.plugins.module_utils.rules import (
    DEFAULT_HOMES_ROOT,
    DEFAULT_QUOTA,
    DEFAULT_USERS_PREFIX,
    invalid_message,
    validate_layout,
    validate_users,
    with_home_hosts,
)

SPEC = {
    "users": {"type": "list", "elements": "raw", "required": True},
    "prefix": {"type": "str", "default": DEFAULT_USERS_PREFIX},
    "default_quota": {"type": "str", "default": DEFAULT_QUOTA},
    "homes_root": {"type": "path", "default": DEFAULT_HOMES_ROOT},
    # The lab layout (docs/inventory.md); without lab_hosts, this host is the lab's only host.
    "lab_hosts": {"type": "list", "elements": "str", "default": []},
    "gpu_hosts": {"type": "list", "elements": "str", "default": []},
    "frontdoor_hosts": {"type": "list", "elements": "str", "default": []},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validated = ArgumentSpecValidator(SPEC).validate(dict(self._task.args))
        if validated.error_messages:
            result.update(failed=True, msg="resolve_lab_users: " + "; ".join(validated.error_messages))
            return result
        p = validated.validated_parameters
        checked = validate_users(
            p["users"], default_quota=p["default_quota"], prefix=p["prefix"], homes_root=p["homes_root"]
        )
        for warning in checked["warnings"]:
            self._display.warning(warning)
        this_host = (task_vars or {}).get("inventory_hostname")
        lab_hosts = p["lab_hosts"] or ([this_host] if this_host else [])
        errors = list(checked["errors"])
        if lab_hosts:
            errors += validate_layout(checked["users"], lab_hosts, p["gpu_hosts"], p["frontdoor_hosts"])
        if errors:
            result.update(failed=True, changed=False, msg=invalid_message(errors), errors=errors)
            return result
        lab = with_home_hosts(checked["users"], lab_hosts) if lab_hosts else checked["users"]
        # Roles act on the users homed here only; lab-wide views (front door, passwords) read lab_users_lab.
        here = [u for u in lab if not lab_hosts or u["host"] == this_host]
        ansible_facts = {"lab_users_resolved": here}
        ansible_facts["lab_users_lab"] = lab
        result.update(changed=False, ansible_facts=ansible_facts)
        return result
