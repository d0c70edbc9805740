"""Run a playbook against hosts that are this machine (connection local, faked facts): test support.

The play writes one JSON report per host into ``out`` (passed as the extra variable ``out``); the caller reads them.
The fact cache is kept in memory, so faked facts never reach the collection's fact cache.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

ROOT = Path(__file__).resolve().parents[2]
# The last task of such a play: each host's ``report`` fact, as JSON, where reports() reads it.
WRITE_REPORT = """\
    - name: Write the report
      ansible.builtin.copy:
        content: "{{ report | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


def run_local_play(
    tmp: Path, inventory: Mapping[str, Any], playbook: str, extra_env: Optional[Mapping[str, str]] = None
) -> subprocess.CompletedProcess:
    """Write ``inventory`` (JSON) and ``playbook`` under ``tmp`` and run it with the collection's ansible.cfg."""
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    (tmp / "play.yml").write_text(playbook)
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_CACHE_PLUGIN="memory",  # the faked facts must not reach the fact cache
        ANSIBLE_LOCAL_TEMP=str(tmp / "tmp"),
    )
    env.update(extra_env or {})
    return subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.json"), "-e", f"out={tmp}", str(tmp / "play.yml")],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip


def reports(tmp: Path, hosts: Mapping[str, Any]) -> Dict[str, dict]:
    """The JSON report each host's play wrote to ``tmp/<host>.json``."""
    return {host: json.loads((tmp / f"{host}.json").read_text()) for host in hosts}
