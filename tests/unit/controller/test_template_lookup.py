"""metalab.lab.template (plugins/lookup/template.py) renders exactly what ansible.builtin.template's lookup renders.

One ansible-playbook run on the controller (connection local) renders the same templates through both lookups: the
variables Ansible adds (template_path, ansible_managed), an include of a sibling template, template_vars, a
variable the template sets for itself, non-ASCII text and backslashes. A missing template fails naming the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict

import pytest
from local_play import run_local_play

TEMPLATES = {
    "main.j2": (
        "{{ ansible_managed | comment }}\n"
        "path={{ template_path | basename }}\n"
        "{% set local = 'set inside' %}{{ local }}\n"
        "{% for u in users %}{{ u.name }}:{{ u.quota }}\n{% endfor %}"
        "{% include 'part.j2' %}"
        "extra={{ extra | default('none') }}\n"
        "back\\\\slash \\n é ☃\n"
    ),
    "part.j2": "part of {{ owner }}\n",
}

PLAYBOOK = """
- name: Render the same templates through both lookups
  hosts: localhost
  gather_facts: false
  vars:
    owner: alice
    users: [{name: alice, quota: 1G}, {name: bob, quota: 2G}]
  tasks:
    - name: Render
      ansible.builtin.set_fact:
        report:
          builtin: "{{ lookup('ansible.builtin.template', 'main.j2') }}"
          ours: "{{ lookup('metalab.lab.template', 'main.j2') }}"
          builtin_vars: "{{ lookup('ansible.builtin.template', 'main.j2', template_vars={'extra': 'x'}) }}"
          ours_vars: "{{ lookup('metalab.lab.template', 'main.j2', template_vars={'extra': 'x'}) }}"
          local_after: "{{ local | default('not leaked') }}"
          extra_after: "{{ extra | default('not leaked') }}"
    - name: Write the report
      ansible.builtin.copy:
        content: "{{ report | to_json }}"
        dest: "{{ out }}/localhost.json"
        mode: "0644"
"""

MISSING = """
- name: A template that is not there
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.debug:
        msg: "{{ lookup('metalab.lab.template', 'no-such-file.j2') }}"
"""

INVENTORY = {
    "all": {"hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
}


def write_templates(tmp: Path) -> None:
    (tmp / "templates").mkdir()
    for name, text in TEMPLATES.items():
        (tmp / "templates" / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    tmp = tmp_path_factory.mktemp("lookup")
    write_templates(tmp)
    done = run_local_play(tmp, INVENTORY, PLAYBOOK)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((tmp / "localhost.json").read_text())


def test_renders_what_the_builtin_lookup_renders(rendered: Dict[str, str]) -> None:
    assert rendered["ours"] == rendered["builtin"]
    assert rendered["ours_vars"] == rendered["builtin_vars"]
    text = rendered["ours"]
    assert text.startswith("#\n# Ansible managed")  # ansible_managed, added per template
    assert "path=main.j2\n" in text and "set inside\n" in text
    # The include's own trailing newline is dropped (Jinja's default), by both lookups alike.
    assert "alice:1G\nbob:2G\npart of aliceextra=none\n" in text
    assert "back\\\\slash \\n é ☃\n" in text  # backslashes as written, not escaped twice
    assert "extra=x\n" in rendered["ours_vars"]


def test_rendering_changes_no_variable(rendered: Dict[str, str]) -> None:
    assert rendered["local_after"] == "not leaked"
    assert rendered["extra_after"] == "not leaked"


def test_a_missing_template_fails_naming_it(tmp_path: Path) -> None:
    write_templates(tmp_path)
    done = run_local_play(tmp_path, INVENTORY, MISSING)
    assert done.returncode != 0
    assert "no-such-file.j2" in done.stdout + done.stderr
