"""What a sandbox may leave on the machine: compared before and after."""

from __future__ import annotations

import subprocess
from pathlib import Path

# As /proc/PID/stat names them: the kernel keeps 15 characters of a command's name.
WATCHED = tuple(name[:15] for name in ("systemd-nspawn", "qemu-system-x86_64", "tinyproxy"))


def _out(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return ""


def snapshot(state_dir: Path) -> dict[str, object]:
    processes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            status = fields[1].split()[0]
        except (OSError, IndexError):
            continue
        if status != "Z" and comm.startswith(WATCHED):
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(state_dir) in cmdline or "metalab" in cmdline:
                processes.append(cmdline)
    return {
        "processes": sorted(processes),
        "mounts": sorted(line for line in Path("/proc/mounts").read_text().splitlines() if str(state_dir) in line),
        "loop_devices": _out(["losetup", "-n", "-l"]).strip(),
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in _out(["ip", "-o", "link"]).splitlines()),
        "netns": _out(["ip", "netns", "list"]).strip(),
        "iptables": _out(["iptables-save"]) if Path("/usr/sbin/iptables-save").exists() else "",
        "nft": _out(["nft", "list", "ruleset"]) if Path("/usr/sbin/nft").exists() else "",
        "state": sorted(p.name for p in state_dir.iterdir()) if state_dir.is_dir() else [],
    }
