"""Reading ansible-playbook's output in the suites that run playbooks (tests/sandbox, tests/integration/lab)."""

from __future__ import annotations

import re
import subprocess

# Colour codes (ANSIBLE_FORCE_COLOR, as molecule sets it for what it runs) would hide the recap's names and keys.
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def recap(output: str) -> dict[str, dict[str, int]]:
    """ansible-playbook's PLAY RECAP as {host: {ok, changed, unreachable, failed, ...}}."""
    hosts = {}
    for line in ANSI.sub("", output).split("PLAY RECAP", 1)[-1].splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == ":":
            hosts[parts[0]] = {k: int(v) for k, v in (p.split("=") for p in parts[2:] if "=" in p)}
    return hosts


def failures(run: subprocess.CompletedProcess[str]) -> str:
    """What to show when a playbook run failed: each failed task (its TASK line and the fatal/failed lines after it,
    wherever it is in the output), then the end of the output and of stderr."""
    lines = run.stdout.splitlines()
    shown = []
    for i, line in enumerate(lines):
        if line.startswith(("fatal:", "failed:")) or "FAILED!" in line:
            task = next((lines[j] for j in range(i, -1, -1) if lines[j].startswith("TASK [")), "")
            shown += [task, *lines[i : i + 12], ""]
    return "\n".join(shown) + "\n--- end of the output ---\n" + run.stdout[-3000:] + run.stderr[-2000:]
