"""Fixtures for every unit test: running an Ansible module's main() in-process."""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """How a module ended: ``result`` is what it passed to exit_json/fail_json, ``failed`` which one it was."""

    def __init__(self, result: Dict[str, Any], failed: bool = False) -> None:
        super().__init__(result.get("msg", ""))
        self.result, self.failed = result, failed


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None], Dict[str, Any]], ModuleExit]:
    """``run_module(module.main, args)`` runs the module with ``args`` and returns its ModuleExit.

    A module that returns without calling exit_json or fail_json fails the test.
    """

    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise ModuleExit(result)

    def fail_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise ModuleExit(result, failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(main: Callable[[], None], args: Dict[str, Any]) -> ModuleExit:
        with patch_module_args(args), pytest.raises(ModuleExit) as caught:
            main()
        return caught.value

    return run
