"""The lab network that nspawn sandboxes share (10.214.0.0/24).

A network namespace of its own (``ml-labnet``) holds a bridge; every nspawn sandbox gets a veth pair whose
inside end, ``lab0``, has the deterministic address 10.214.0.<index>/24 and whose outside end sits on that
bridge. Nothing here touches the root namespace: no forwarding, no routes, no firewall rules. The last sandbox
taken down removes the namespace. Lab hosts reach each other on it (a backup target, a multi-host lab).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from metalab.labctl.sandbox.errors import SandboxError

NETNS = "ml-labnet"
BRIDGE = "labbr0"
INSIDE = "lab0"
PREFIX = "10.214.0"
# One lock for every sandbox state directory (tests use private ones): they all share this network.
LOCK = Path("/run/lock/metalab-labnet.lock")


def address(index: int) -> str:
    """The sandbox's address on the lab network (no prefix length)."""
    if not 1 <= index <= 254:
        raise SandboxError(f"no lab network address for sandbox index {index}")
    return f"{PREFIX}.{index}"


def port(index: int) -> str:
    """The bridge port of sandbox ``index`` inside the labnet namespace."""
    return f"mllab{index}"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _sh(argv: list[str]) -> None:
    result = _run(argv)
    if result.returncode != 0:
        raise SandboxError(f"'{' '.join(argv)}' failed: {result.stderr.strip()}")


def exists() -> bool:
    return Path(f"/run/netns/{NETNS}").exists()


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialises building the network against the last sandbox's `down` removing it."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ensure() -> None:
    """Create the namespace with its bridge (nothing when it is there)."""
    if not exists():
        _sh(["ip", "netns", "add", NETNS])
    if _run(["ip", "-n", NETNS, "link", "show", BRIDGE]).returncode != 0:
        _sh(["ip", "-n", NETNS, "link", "add", BRIDGE, "type", "bridge"])
    _sh(["ip", "-n", NETNS, "link", "set", BRIDGE, "up"])
    _sh(["ip", "-n", NETNS, "link", "set", "lo", "up"])


def attach(sandbox_netns: str, index: int) -> str:
    """Give the sandbox's namespace ``lab0`` on the bridge; returns its address."""
    with locked():
        return _attach(sandbox_netns, index)


def _attach(sandbox_netns: str, index: int) -> str:
    _ensure()
    outside = port(index)
    if _run(["ip", "-n", NETNS, "link", "show", outside]).returncode == 0:
        _sh(["ip", "-n", NETNS, "link", "del", outside])  # a leftover of a sandbox that died with this index
    _sh(["ip", "-n", NETNS, "link", "add", outside, "type", "veth", "peer", "name", INSIDE, "netns", sandbox_netns])
    _sh(["ip", "-n", NETNS, "link", "set", outside, "master", BRIDGE])
    _sh(["ip", "-n", NETNS, "link", "set", outside, "up"])
    ip = address(index)
    _sh(["ip", "-n", sandbox_netns, "addr", "add", f"{ip}/24", "dev", INSIDE])
    _sh(["ip", "-n", sandbox_netns, "link", "set", INSIDE, "up"])
    return ip


def ports() -> list[str]:
    """The sandbox ports now on the bridge."""
    if not exists():
        return []
    result = _run(["ip", "-n", NETNS, "-o", "link", "show"])
    names = []
    for line in result.stdout.splitlines():
        fields = line.split(":", 2)
        if len(fields) >= 2:
            names.append(fields[1].strip().split("@", 1)[0])
    return [name for name in names if name.startswith("mllab")]


def detach(index: int | None) -> None:
    """Remove the sandbox's port; the namespace goes with the last one."""
    with locked():
        _detach(index)


def _detach(index: int | None) -> None:
    if not exists():
        return
    if index:
        _run(["ip", "-n", NETNS, "link", "del", port(index)])
    if not ports():
        _run(["ip", "netns", "del", NETNS])
