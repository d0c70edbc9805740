# Copyright: metalab contributors
# Apache-2.0
"""The roles' template lookup: ansible.builtin.template's, without a deep copy of every variable per file."""

from __future__ import annotations

import os

# What ansible.builtin.template's lookup renders with (ansible-core 2.19, pinned with the collection).
from ansible._internal._templating import _template_vars
from ansible._internal._templating._engine import TemplateOptions
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.template import trust_as_template

DOCUMENTATION = r"""
name: template
short_description: Render role templates (ansible.builtin.template's lookup, cheaper on the controller)
description:
  - >-
    Renders each template file named, found like ansible.builtin.template's lookup finds it (the role's
    C(templates/) folder first), with every variable of the task plus the template variables Ansible adds
    (C(template_path), C(template_fullpath), C(template_mtime), C(ansible_managed) and the others) and those in
    O(template_vars); the result is the same text.
  - >-
    ansible.builtin.template's lookup deep-copies every variable of the play for each file it renders; the
    template action (the C(template) module) copies only the top level. This lookup does what the action does: a
    rerun of metalab's roles renders about forty templates on the controller per host, and the deep copies were
    most of that work (docs/performance.md). Rendering never changes a variable, so the deep copy protects nothing.
options:
  _terms:
    description: Template files, relative to the role's C(templates/) folder (or the play's search path).
    required: true
  template_vars:
    description: More variables for these templates only.
    type: dict
    default: {}
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables if variables is not None else {}
        extra = self.get_option("template_vars") or {}
        results = []
        for term in terms:
            path = self.find_file_in_search_path(variables, "templates", term)
            if not path:
                raise AnsibleError(f"the template file {term} could not be found for the lookup")
            source = trust_as_template(self._loader.get_text_file_contents(path))
            # Jinja includes: the template's own folder, then each search path's templates/ folder and the path.
            searchpath = [os.path.dirname(path)]
            for base in variables.get("ansible_search_path", []) or []:
                searchpath.extend((os.path.join(base, "templates"), base))
            # A copy of the top level only, as the template action makes: rendering reads variables, it never
            # changes one, and the added template variables go into the copy.
            template_vars = variables.copy()
            template_vars.update(
                _template_vars.generate_ansible_template_vars(
                    path=term, fullpath=path, include_ansible_managed="ansible_managed" not in template_vars
                )
            )
            template_vars.update(extra)
            templar = self._templar.copy_with_new_env(available_variables=template_vars, searchpath=searchpath)
            # The engine's own call, as ansible.builtin.template's lookup makes it: the public one would finalize the
            # result (a template that renders a list would be a list); the default overrides (trim_blocks on).
            results.append(templar._engine.template(source, options=TemplateOptions(escape_backslashes=False)))
        return results
