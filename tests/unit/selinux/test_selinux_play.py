"""roles/common/tasks/selinux.yml in a play on the controller, with the SELinux tools faked (they keep their state in
files): the first run adds the file context rules, relabels, turns the boolean on and loads the module, in that
order; the second run changes nothing. And lab_selinux_enabled is true only where the selinux fact says enabled."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from local_play import run_local_play

ROOT = Path(__file__).resolve().parents[3]

# Each fake logs its argv, then acts on its state file the way the real tool's output would show it.
FAKES = {
    "semanage": """
case "$*" in
  "fcontext --list --locallist") cat "$STATE/fcontext" 2>/dev/null || true ;;
  fcontext\\ -a\\ -t*|fcontext\\ -m\\ -t*) echo "$5 all files system_u:object_r:$4:s0" >> "$STATE/fcontext" ;;
  *) exit 2 ;;
esac""",
    "restorecon": """
mark="$STATE/labelled$(echo "$3" | tr / _)"
[ -e "$mark" ] || { echo "Relabeled $3 from var_t to container_file_t"; : > "$mark"; }""",
    "getsebool": 'cat "$STATE/booleans"',
    "setsebool": 'sed -i "s/^$2 --> off/$2 --> on/" "$STATE/booleans"',
    "semodule": """
case "$1" in
  --list-modules) cat "$STATE/modules" ;;
  --install) basename "$2" .pp >> "$STATE/modules" ;;
  *) exit 2 ;;
esac""",
    "checkmodule": ': > "$4"',
    "semodule_package": ': > "$2"',
}

PLAYBOOK = """
- name: SELinux tasks of a role, with faked tools
  hosts: all
  gather_facts: false
  tasks:
    - name: Fake the facts
      ansible.builtin.set_fact:
        distribution: Amazon
        distribution_major_version: "2023"
        distribution_version: "2023.6.20241212"
        selinux: "{{ fake_selinux }}"
        cacheable: true
    - name: Keep the package manager and /usr/share out of it (a fact outranks the role's vars)
      ansible.builtin.set_fact:
        __common_selinux_packages: []
        __common_selinux_module_dir: "{{ out }}/modules"
    - name: The common role, as every role gets it (platform check, platform and common variables)
      ansible.builtin.include_role:
        name: metalab.lab.common
        public: true
    - name: Report lab_selinux_enabled
      ansible.builtin.copy:
        content: "{{ {'enabled': lab_selinux_enabled | bool} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
    - name: The front door's and the homes' SELinux tasks, as the roles include them
      ansible.builtin.include_role:
        name: metalab.lab.common
        tasks_from: selinux
      vars:
        __common_selinux_fcontexts: [{path: "{{ out }}/homes", setype: container_file_t}]
        __common_selinux_booleans: [httpd_can_network_connect]
        __common_selinux_module: {role: frontdoor, name: metalab_frontdoor}
      when: lab_selinux_enabled | bool
"""

HOSTS = {
    "enforcing": {"status": "enabled", "mode": "enforcing"},
    "disabled": {"status": "disabled"},
    "nolib": {"status": "Missing selinux Python library"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("selinux")
    bin_dir, state = tmp / "bin", tmp / "state"
    bin_dir.mkdir()
    state.mkdir()
    (tmp / "homes").mkdir()
    (state / "booleans").write_text("httpd_can_network_connect --> off\nhttpd_can_network_relay --> off\n")
    (state / "modules").write_text("container\n")
    for name, body in FAKES.items():
        fake = bin_dir / name
        fake.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STATE/log"\n{body.strip()}\n')
        fake.chmod(0o755)
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "hosts": {name: {"fake_selinux": facts} for name, facts in HOSTS.items()},
        }
    }
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state)}
    done = []
    for _ in range(2):
        run = run_local_play(tmp, inventory, PLAYBOOK, env)
        assert run.returncode == 0, run.stdout + run.stderr
        done.append(run.stdout)
        (state / f"log.{len(done)}").write_text((state / "log").read_text() if (state / "log").exists() else "")
        (state / "log").unlink(missing_ok=True)
    return {"tmp": tmp, "state": state, "stdout": done}


def changed(stdout: str, host: str) -> int:
    return int(re.search(rf"^{host}\s*:.*changed=(\d+)", stdout, re.M).group(1))


def test_lab_selinux_enabled_only_where_the_fact_says_enabled(runs):
    enabled = {host: json.loads((runs["tmp"] / f"{host}.json").read_text())["enabled"] for host in HOSTS}
    assert enabled == {"enforcing": True, "disabled": False, "nolib": False}


def test_the_first_run_labels_turns_on_and_loads_in_order(runs):
    homes = f"{runs['tmp']}/homes"
    modules = f"{runs['tmp']}/modules/metalab_frontdoor"
    assert (runs["state"] / "log.1").read_text().splitlines() == [
        "semanage fcontext --list --locallist",
        f"semanage fcontext -a -t container_file_t {homes}(/.*)?",
        f"restorecon -R -v {homes}",
        "getsebool -a",
        "setsebool -P httpd_can_network_connect on",
        "semodule --list-modules",
        f"checkmodule -M -m -o {modules}.mod {modules}.te",
        f"semodule_package -o {modules}.pp -m {modules}.mod",
        f"semodule --install {modules}.pp",
    ]
    assert (runs["tmp"] / "modules" / "metalab_frontdoor.te").read_bytes() == (
        ROOT / "roles/frontdoor/files/selinux/metalab_frontdoor.te"
    ).read_bytes()
    assert changed(runs["stdout"][0], "enforcing") > 0


def test_the_second_run_only_reads(runs):
    assert (runs["state"] / "log.2").read_text().splitlines() == [
        "semanage fcontext --list --locallist",
        f"restorecon -R -v {runs['tmp']}/homes",
        "getsebool -a",
        "semodule --list-modules",
    ]
    assert changed(runs["stdout"][1], "enforcing") == 0


def test_hosts_without_selinux_run_nothing(runs):
    # (the first run's one change on every host is the report file)
    for host in ("disabled", "nolib"):
        assert changed(runs["stdout"][1], host) == 0
        assert re.search(rf"^{host}\s*:.*skipped=1\b", runs["stdout"][1], re.M), runs["stdout"][1][-3000:]
