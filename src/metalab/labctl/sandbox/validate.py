"""Argument validation for ``labctl sandbox`` (pure functions)."""

from __future__ import annotations

import os
import re
import shutil

from metalab.labctl.sandbox.errors import SandboxError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
KINDS = ("nspawn", "vm")
_SIZE_RE = re.compile(r"^(\d+)([MGT])$")
_UNITS = {"M": 1024**2, "G": 1024**3, "T": 1024**4}


def name(value: str) -> str:
    if not NAME_RE.match(value):
        raise SandboxError(
            f"invalid sandbox name {value!r}: use 1-20 lowercase letters, digits and '-', starting with a letter"
        )
    return value


def kind(value: str) -> str:
    if value not in KINDS:
        raise SandboxError(f"unknown sandbox kind {value!r}: choose one of {', '.join(KINDS)}")
    return value


def size(value: str) -> int:
    """'4G' -> bytes. Whole numbers with M, G or T only: qemu and mkfs take them as they are."""
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise SandboxError(f"invalid size {value!r}: use a whole number followed by M, G or T, e.g. 4G")
    number, unit = int(match.group(1)), match.group(2)
    if number <= 0:
        raise SandboxError(f"invalid size {value!r}: must be larger than zero")
    total = number * _UNITS[unit]
    if total < 64 * 1024**2:
        raise SandboxError(f"invalid size {value!r}: an NVMe disk needs at least 64M")
    return total


def require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("sandboxes need root (namespaces, mounts, loop devices): run labctl sandbox as root")


REQUIRED_TOOLS = {
    "nspawn": {
        "debootstrap": "debootstrap",
        "systemd-nspawn": "systemd-container",
        "ip": "iproute2",
        "tinyproxy": "tinyproxy",
        "ssh-keygen": "openssh-client",
    },
    "vm": {
        "debootstrap": "debootstrap",
        "qemu-system-x86_64": "qemu-system-x86",
        "qemu-img": "qemu-utils",
        "mkfs.ext4": "e2fsprogs",
        "ssh-keygen": "openssh-client",
    },
}


def require_tools(sandbox_kind: str, which=shutil.which) -> None:
    missing = [pkg for tool, pkg in REQUIRED_TOOLS[sandbox_kind].items() if which(tool) is None]
    if missing:
        raise SandboxError(
            f"missing tools for {sandbox_kind} sandboxes: install them with "
            f"'apt-get install {' '.join(sorted(set(missing)))}' (or run 'make deps')"
        )
