"""The lab scenario's suite (molecule/lab): one lab on three nspawn sandboxes, converged once by molecule and shared by
every test here (issue 17).

ml-door is the lab's one address (group lab_frontdoor) and homes carol; ml-lab1 homes alice and dora; ml-lab2 homes
bob. The tests run in file order (test_1_ ... test_5_): the last one powers ml-lab2 off.

Lab hosts are reached as testinfra hosts through molecule's inventory directory (the --ansible-inventory molecule
passes); the browser and the portal client (tests/support/browser.py) reach the lab through the front door's
address, like a lab user's machine would. labctl commands run against an inventory an admin would keep: the
sandboxes' connection settings (`labctl sandbox inventory`) and the scenario's settings, in one YAML file.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from browser import (  # noqa: F401 - fixtures (artifacts, chromium, page) are found by pytest in this namespace
    REPO,
    PortalClient,
    artifacts,
    chromium,
    page,
    requirement_missing,
    run_in_new_notebook,
    wait_for,
)

DOOR, LAB1, LAB2 = "ml-door", "ml-lab1", "ml-lab2"
HOSTS = (DOOR, LAB1, LAB2)
HOMES_DIR = "/srv/metalab/homes"
# Where each lab user is homed when the scenario converges (molecule/lab/molecule.yml).
HOMED = {"carol": DOOR, "alice": LAB1, "dora": LAB1, "bob": LAB2}
PASSWORDS = {"carol": "carol-lab-pass-333", "alice": "alice-lab-pass-1", "dora": "dora-lab-pass-4444",
             "bob": "bob-lab-pass-22"}  # fmt: skip
BIN = Path(sys.executable).parent
INTERNAL_LOG = "/var/log/nginx/metalab-internal.log"
# What labctl and ansible-playbook run with here: the repository's ansible.cfg, no colours (molecule forces them).
ENVIRON = {k: v for k, v in os.environ.items() if k != "ANSIBLE_FORCE_COLOR"}
ENVIRON.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")


class Lab:
    """The converged lab: its hosts (testinfra), their sandbox records, the inventory an admin keeps."""

    def __init__(self, inventory_dir: Path, workdir: Path) -> None:
        self.inventory_dir = inventory_dir
        self.hosts = {
            name: testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory_dir)) for name in HOSTS
        }
        listing = json.loads(self.labctl("sandbox", "list", "--json", inventory=False).stdout)
        self.records = {r["name"]: r for r in listing if r["name"] in HOSTS}
        missing = set(HOSTS) - set(self.records)
        assert not missing, f"sandboxes {sorted(missing)} are not up: run this suite with molecule (molecule/lab)"
        self.inventory = workdir / "hosts.yml"
        self.inventory.write_text(
            "# the lab scenario's lab, as an admin keeps it\n" + yaml.safe_dump(self.admin_inventory())
        )
        self.base_url = f"https://{self.records[DOOR]['ansible_host']}"

    def admin_inventory(self) -> dict[str, Any]:
        """The sandboxes' connection settings and the scenario's settings (molecule's group_vars/all) in one file."""
        sandboxes = yaml.safe_load(self.labctl("sandbox", "inventory", *HOSTS, inventory=False).stdout)
        settings = yaml.safe_load((self.inventory_dir / "group_vars" / "all").read_text())
        sandboxes["all"]["vars"].update({k: v for k, v in settings.items() if not k.startswith("molecule_")})
        sandboxes["all"].setdefault("children", {})["lab_frontdoor"] = {"hosts": {DOOR: None}}
        return sandboxes

    def labctl(self, *args: str, inventory: bool = True, env: dict[str, str] | None = None,
               timeout: int = 900) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = [str(BIN / "labctl"), *args] + (["-i", str(self.inventory)] if inventory else [])
        environ = {**ENVIRON, **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=timeout, check=False, cwd=REPO)

    def playbook(self, *inventories: Path, tags: str, limit: str = "") -> subprocess.CompletedProcess[str]:
        """playbooks/site.yml with the repository's ansible.cfg, the way an admin runs it from a clone."""
        argv = [str(BIN / "ansible-playbook"), str(REPO / "playbooks/site.yml"), "--tags", tags]
        for inventory in inventories or (self.inventory,):
            argv += ["-i", str(inventory)]
        argv += ["--limit", limit] if limit else []
        return subprocess.run(argv, capture_output=True, text=True, env=ENVIRON, timeout=900, check=False, cwd=REPO)

    def run(self, name: str, command: str) -> Any:
        """A command as root on a lab host (testinfra's CommandResult: rc, stdout, stderr)."""
        host = self.hosts[name]
        with host.sudo():
            return host.run(command)

    def sh(self, name: str, command: str) -> str:
        result = self.run(name, command)
        assert result.rc == 0, f"{name}: {command}: rc={result.rc} {result.stderr} {result.stdout}"
        return result.stdout

    def holds(self, name: str, user: str) -> tuple[bool, bool]:
        """(the host has lab-USER's account, the host has USER's home)."""
        account = self.run(name, f"getent passwd lab-{user}").rc == 0
        home = self.run(name, f"test -d {HOMES_DIR}/{user}").rc == 0
        return account, home

    def curl(self, name: str, *args: str) -> str:
        """The HTTP status of a curl run as root on a lab host (000: no HTTP answer)."""
        quoted = " ".join(shlex.quote(a) for a in args)
        return self.run(name, f"curl -s -o /dev/null -m 5 -w '%{{http_code}}' {quoted}").stdout.strip()

    def set_password(self, user: str, password: str) -> None:
        """`labctl users passwd` runs this on the lab's front door: the one password database of the lab."""
        encoded = base64.b64encode((password + "\n").encode()).decode()
        self.sh(DOOR, f"echo {encoded} | base64 -d | metalab-broker passwd {user} --stdin")


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    inventory = request.config.getoption("ansible_inventory", None) or os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        requirement_missing("no lab inventory: run this suite with molecule (molecule/lab)")
    path = Path(inventory)
    return Lab(path if path.is_dir() else path.parent, tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def passwords(lab: Lab) -> dict[str, str]:
    """Every lab user has a portal password, set at the front door whichever host she is homed on."""
    for user, password in PASSWORDS.items():
        lab.set_password(user, password)
        lab.sh(DOOR, f"metalab-broker unlock {user}")
    return PASSWORDS


@pytest.fixture
def portal(lab: Lab):
    return lambda: PortalClient(lab.base_url)
