# Copyright: metalab contributors
# Apache-2.0
"""A host's platform, from its facts: whether metalab supports it (metalab's rules module), its variable files."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.module_utils.rules import platform_problem as _problem
from ansible_collections.metalab.lab.plugins.module_utils.rules import podman_cdi_problem as _cdi_problem

DOCUMENTATION = r"""
name: platform_problem
short_description: Why metalab does not support a host's platform, or an empty string when it does
description:
  - Reads the distribution, major version and version from a host's facts and applies metalab's platform rule
    (C(PLATFORMS) and C(REFUSED_PLATFORMS) of the rules module, the one table labctl and the NVIDIA plan read).
  - The message names the platform and either the reason it is refused (Amazon Linux 2) or the supported list.
options:
  _input:
    description: The host's C(ansible_facts) (C(distribution), C(distribution_major_version), C(distribution_version)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse platforms that metalab does not support
  ansible.builtin.assert:
    that: (ansible_facts | metalab.lab.platform_problem) | length == 0
    fail_msg: "{{ ansible_facts | metalab.lab.platform_problem }}"
"""

RETURN = r"""
_value:
  description: Empty when metalab supports the platform, else the message that says why not.
  type: str
"""


def _facts(facts, name: str) -> Mapping:
    if not isinstance(facts, Mapping) or "distribution" not in facts:
        raise AnsibleFilterError(name + " expects a host's ansible_facts (gather the distribution facts)")
    return facts


def platform_problem(facts) -> str:
    facts = _facts(facts, "platform_problem")
    distribution = str(facts["distribution"])
    major = str(facts.get("distribution_major_version", ""))
    version = str(facts.get("distribution_version", ""))
    return _problem(distribution, major, version) or ""


def platform_vars_files(roles_dir, facts) -> list:
    """The platform variable files of every role under roles_dir, for a host's facts.

    ``vars/<distribution>.yml`` and ``vars/<distribution>_<major>.yml`` of each role, where they exist: every
    general file before every specific one, so that loaded in order a role's specific file overrides its general one.
    """
    facts = _facts(facts, "platform_vars_files")
    general = str(facts["distribution"])
    specific = general + "_" + str(facts.get("distribution_major_version", ""))
    found = []
    for name in (general, specific):
        # glob.escape: the names come from the host; they must not act as patterns.
        found += sorted(glob.glob(os.path.join(glob.escape(str(roles_dir)), "*", "vars", glob.escape(name) + ".yml")))
    return found


def podman_cdi_problem(version_output) -> str:
    """Why GPU runtimes cannot work with this podman (`podman --version`'s output), or '' when they can."""
    return _cdi_problem(str(version_output)) or ""


class FilterModule:
    def filters(self):
        return {
            "platform_problem": platform_problem,
            "platform_vars_files": platform_vars_files,
            "podman_cdi_problem": podman_cdi_problem,
        }
