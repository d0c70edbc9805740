"""SSH keys and readiness checks for sandboxes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from metalab.labctl.sandbox.errors import SandboxError

SSH_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
)


def keypair(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"metalab-sandbox-{directory.name}", "-f", str(key)],
            check=True,
        )
    return key


def ssh_argv(host: str, port: int, user: str, key: Path) -> list[str]:
    return ["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port), f"{user}@{host}"]


def wait_for_ssh(host: str, port: int, user: str, key: Path, timeout: float, still_running) -> None:
    """Wait until `ssh true` works; fail early when the machine process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not still_running():
            raise SandboxError("the sandbox stopped while booting")
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError:
            time.sleep(0.5)
            continue
        result = subprocess.run([*ssh_argv(host, port, user, key), "true"], capture_output=True, check=False)
        if result.returncode == 0:
            return
        time.sleep(1)
    raise SandboxError(f"no SSH answer from {host}:{port} within {int(timeout)} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
