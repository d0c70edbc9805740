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
    validate_users,
)

SPEC = {
    "users": {"type": "list", "elements": "raw", "required": True},
    "prefix": {"type": "str", "default": DEFAULT_USERS_PREFIX},
    "default_quota": {"type": "str", "default": DEFAULT_QUOTA},
    "homes_root": {"type": "path", "default": DEFAULT_HOMES_ROOT},
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
        if checked["errors"]:
            result.update(failed=True, changed=False, msg=invalid_message(checked["errors"]), errors=checked["errors"])
            return result
        result.update(changed=False, ansible_facts={"lab_users_resolved": checked["users"]})
        return result
