# Copyright: metalab contributors
# Apache-2.0
"""Action for metalab.lab.lab_users: ``validate_only`` runs on the controller.

Validating the lab_users list is pure computation (plugins/module_utils/labusers.py), so the preflight tasks
that only validate do it here, with the module's own code and messages, instead of a module call on every host
(one SSH round trip each). Every other call runs the module on the host as usual.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible_collections.metalab.lab.plugins.module_utils.labusers import (
    VALIDATION_SPEC,
    invalid_message,
    validate_params,
    validated_result,
)


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        validated = ArgumentSpecValidator(VALIDATION_SPEC).validate(
            {k: v for k, v in args.items() if k in VALIDATION_SPEC}
        )
        if validated.error_messages or not validated.validated_parameters.get("validate_only"):
            # Not a pure validation (or arguments the module itself should report on): run the module.
            result.update(self._execute_module(module_args=dict(args), task_vars=task_vars))
            return result
        checked = validate_params(validated.validated_parameters)
        for warning in checked["warnings"]:
            self._display.warning(warning)
        if checked["errors"]:
            result.update(failed=True, changed=False, msg=invalid_message(checked["errors"]), errors=checked["errors"])
            return result
        result.update(validated_result(checked))
        return result
