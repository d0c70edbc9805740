# Copyright: metalab contributors
# Apache-2.0
"""SELinux planning on the controller (plugins/module_utils/selinux.py): file context rules, booleans, modules."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.module_utils import selinux as _selinux

DOCUMENTATION = r"""
name: selinux_fcontext_argv
short_description: The semanage command that gives a path and everything under it an SELinux type, or []
description:
  - Reads the output of C(semanage fcontext -l -C) (the host's local rules) and returns the argv of
    C(semanage fcontext -a) (no rule for the path yet) or C(-m) (a rule with another type), or an empty list when
    the rule is already there. The rule covers the directory and everything under it (C(<path>(/.*)?)).
positional: path, setype
options:
  _input:
    description: The stdout of C(semanage fcontext -l -C).
    type: str
    required: true
  path:
    description: The directory, e.g. C(/srv/metalab/homes).
    type: str
    required: true
  setype:
    description: The SELinux type, e.g. C(container_file_t).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Label the homes for the runtimes
  ansible.builtin.command:
    argv: "{{ __listing.stdout | metalab.lab.selinux_fcontext_argv('/srv/metalab/homes', 'container_file_t') }}"
"""

RETURN = r"""
_value:
  description: The argv, or an empty list when nothing is to do.
  type: list
  elements: str
"""


def _wrap(func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from exc

    return wrapper


@_wrap
def selinux_fcontext_argv(listing, path, setype) -> list:
    return _selinux.fcontext_argv(str(listing), _selinux.fcontext_spec(str(path)), str(setype)) or []


@_wrap
def selinux_booleans_off(getsebool, names) -> list:
    """The booleans of names that are off (getsebool's output)."""
    return _selinux.booleans_off(str(getsebool), [str(name) for name in names])


def selinux_module_loaded(semodule_list, name) -> bool:
    """Whether `semodule -l` lists the module."""
    return _selinux.module_loaded(str(semodule_list), str(name))


class FilterModule:
    def filters(self):
        return {
            "selinux_fcontext_argv": selinux_fcontext_argv,
            "selinux_booleans_off": selinux_booleans_off,
            "selinux_module_loaded": selinux_module_loaded,
        }
