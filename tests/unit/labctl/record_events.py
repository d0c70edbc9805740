"""Re-record the ansible-runner event streams that the labctl progress tests replay.

Usage: .venv/bin/python tests/unit/labctl/record_events.py

Each scenario runs a small throwaway playbook through ansible-runner against
``localhost`` (``ansible_connection=local``) and, for the unreachable case, a
loopback SSH port nothing listens on (127.0.0.1:1 -- loopback only). The
``artifacts/*/job_events/*.json`` files are trimmed of noise (stdout kept) and
written to ``fixtures/events/<scenario>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import ansible_runner

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "events"

# Keys of event_data kept in the fixtures: what the progress model reads, plus a little context.
KEEP_EVENT_DATA = {
    "host", "remote_addr", "task", "task_action", "role", "play", "playbook", "name",
    "start", "end", "duration", "ignore_errors",
    "ok", "changed", "failures", "dark", "skipped", "processed", "ignored", "rescued",
}  # fmt: skip
KEEP_RES = {"changed", "failed", "unreachable", "msg", "rc", "skipped", "skip_reason", "dest"}

INVENTORY = """\
all:
  hosts:
    {hosts}
  vars:
    ansible_python_interpreter: "{python}"
"""
LOCAL = "{name}: {{ansible_connection: local}}"
# Nothing listens on port 1 of the loopback address: the SSH connection is refused at once.
UNREACHABLE = (
    "{name}: {{ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1, "
    "ansible_ssh_common_args: '-o ConnectTimeout=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'}}"
)

ROLE_TASKS = """\
- name: Read the root directory
  ansible.builtin.stat:
    path: /
"""

# Every scenario is one play over all hosts that runs the role, then its own tasks.
PLAY = """\
- name: {name}
  hosts: all
  gather_facts: false
  roles:
    - probe
  tasks:
"""
SAY_HELLO = """\
    - name: Say hello
      ansible.builtin.debug:
        msg: hello
"""
WRITE_SCRATCH = """\
    - name: Write a scratch file
      ansible.builtin.copy:
        content: "{{{{ 99999999 | random }}}}\\n"
        dest: "{{{{ scratch }}}}/{dest}"
        mode: "0600"
"""

PLAYBOOKS: dict[str, str] = {
    "ok": PLAY.format(name="Everything is fine") + SAY_HELLO,
    "changed": PLAY.format(name="One change")
    + WRITE_SCRATCH.format(dest="changed.txt")
    + """\
    - name: Skip this one
      ansible.builtin.debug:
        msg: never
      when: false
""",
    "failed": PLAY.format(name="One failure")
    + WRITE_SCRATCH.format(dest="{{ inventory_hostname }}.txt")
    + """\
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: this task fails on purpose
      when: inventory_hostname == 'lab-b'
    - name: Runs after the failure on the healthy host only
      ansible.builtin.debug:
        msg: still here
""",
    "unreachable": PLAY.format(name="One host is unreachable") + SAY_HELLO,
}

HOSTS: dict[str, list[str]] = {
    "ok": [LOCAL.format(name="lab-a")],
    "changed": [LOCAL.format(name="lab-a")],
    "failed": [LOCAL.format(name="lab-a"), LOCAL.format(name="lab-b")],
    "unreachable": [LOCAL.format(name="lab-a"), UNREACHABLE.format(name="lab-gone")],
}


def trim(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("event_data", {})
    kept: dict[str, Any] = {k: v for k, v in data.items() if k in KEEP_EVENT_DATA}
    res = data.get("res")
    if isinstance(res, dict):
        kept["res"] = {k: v for k, v in res.items() if k in KEEP_RES}
    out = {
        "event": event["event"],
        "counter": event.get("counter"),
        "created": event.get("created"),
        "stdout": event.get("stdout", ""),
    }
    if kept:
        out["event_data"] = kept
    return out


def record(name: str, workdir: Path) -> list[dict[str, Any]]:
    pdd = workdir / name
    project = pdd / "project"
    (project / "roles" / "probe" / "tasks").mkdir(parents=True)
    (project / "roles" / "probe" / "tasks" / "main.yml").write_text(ROLE_TASKS)
    (project / "play.yml").write_text(PLAYBOOKS[name])
    # An empty config: the recording must not depend on the developer's ansible.cfg.
    (pdd / "ansible.cfg").write_text("[defaults]\n")
    scratch = workdir / f"{name}-scratch"
    scratch.mkdir()
    inv = pdd / "inventory" / "hosts.yml"
    inv.parent.mkdir()
    inv.write_text(INVENTORY.format(hosts="\n    ".join(HOSTS[name]), python=sys.executable))
    result = ansible_runner.run(
        private_data_dir=str(pdd),
        playbook="play.yml",
        inventory=str(inv),
        extravars={"scratch": str(scratch)},
        envvars={
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CONFIG": str(pdd / "ansible.cfg"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
        },
        quiet=True,
        ident="recording",
    )
    files = sorted(
        (pdd / "artifacts" / "recording" / "job_events").glob("*.json"),
        key=lambda p: int(p.name.split("-", 1)[0]),
    )
    events = [trim(json.loads(f.read_text())) for f in files]
    print(f"{name}: rc={result.rc} status={result.status} events={len(events)}")
    return events


def main() -> None:
    # The venv's ansible-playbook, whether or not the venv is activated.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:] or list(PLAYBOOKS)
    with tempfile.TemporaryDirectory(prefix="metalab-record-") as tmp:
        for name in names:
            events = record(name, Path(tmp))
            # Replace the throwaway directory so that a re-recording diffs cleanly.
            text = json.dumps(events, indent=1).replace(tmp, "/tmp/metalab-record")
            (OUT / f"{name}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
