"""Real sandboxes: these tests need root, debootstrap, systemd-nspawn and qemu (`make deps`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import pytest
from playbook_output import failures, recap  # noqa: F401 - the suites import them from here

from metalab.labctl.sandbox.ssh import ssh_argv

# The tools of the interpreter running the tests (the project venv), whatever PATH says.
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
os.environ["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"
LABCTL = shutil.which("labctl") or "labctl"


def labctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LABCTL, "sandbox", *args], capture_output=True, text=True, check=check, timeout=600)


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        # make test (METALAB_REQUIRE_ALL=1) runs as root: there, a missing requirement fails instead of skipping
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":
            raise pytest.UsageError("tests/sandbox need root (sandboxes are nspawn containers and qemu VMs)")
        skip = pytest.mark.skip(reason="sandboxes need root")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def state_dir():
    """A private sandbox state directory, so these tests never see or touch other sandboxes."""
    directory = Path(tempfile.mkdtemp(prefix="metalab-sandbox-tests-"))
    previous = os.environ.get("METALAB_SANDBOX_DIR")
    os.environ["METALAB_SANDBOX_DIR"] = str(directory)
    yield directory
    labctl("down", "--all", check=False)
    if previous is None:
        del os.environ["METALAB_SANDBOX_DIR"]
    else:
        os.environ["METALAB_SANDBOX_DIR"] = previous
    shutil.rmtree(directory, ignore_errors=True)


def ssh(record: dict, command: str) -> subprocess.CompletedProcess[str]:
    """Run a command on a sandbox as its admin, the way labctl's own readiness check reaches it."""
    argv = ssh_argv(
        record["ansible_host"], record["ansible_port"], record["ansible_user"],
        Path(record["ansible_ssh_private_key_file"]),
    )  # fmt: skip
    return subprocess.run([*argv, command], capture_output=True, text=True, timeout=120, check=False)


def up(name: str, *extra: str) -> dict:
    result = labctl("up", name, "--json", *extra, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def playbook(
    name: str, *inventories: Path, tags: str, environ: Optional[Mapping[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """playbooks/<name> with the repository's ansible.cfg, the way an admin runs it from a clone.

    ``environ`` replaces the caller's environment (os.environ by default).
    """
    argv = ["ansible-playbook", str(REPO / "playbooks" / name), "--tags", tags]
    for inventory in inventories:
        argv += ["-i", str(inventory)]
    env = {**(os.environ if environ is None else environ), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, cwd=REPO, env=env)
