"""labctl against real sandboxes: provision (progress, summary, exit codes), users --apply, doctor.

Slow by nature (real Ansible runs on real hosts; see the `slow` marks and the durations in the docstrings).
The whole file takes about 10 minutes on a 2-core machine: one full-site converge (~5 min, shared by the
users and doctor tests), two nspawn hosts provisioned with base,storage,lab_users, and a VM for the homes volume.
At most 3 sandboxes run at once; every one is taken down, also when a test fails.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LABCTL, labctl, up

# Every test here is slow (minutes): `sandbox` selects them, `vm` marks the one that boots a qemu VM.
pytestmark = pytest.mark.sandbox

# Site variables of an nspawn lab host (as molecule/default): no NVMe, no quotas, no registry. The portal (its own
# role and tests) is off: labctl's acceptance does not depend on it, and the front door then serves / itself.
NSPAWN_SITE: dict[str, Any] = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "runtime_image_base_from_host": True,
    "lab_portal_enabled": False,
}
FACTS_FILE = "/etc/ansible/facts.d/metalab.fact"
GUARD_MARKER = "/var/lib/metalab/guard/guard.last-run"
GUARD_CRON = "/etc/cron.d/metalab-guard"


# --- helpers ----------------------------------------------------------------------------------------------------


def run(*args: str, cache: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """`labctl ARGS` as an admin would type it, with private artifacts and no personal config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METALAB_") or k == "METALAB_SANDBOX_DIR"}
    env.update(METALAB_CACHE=str(cache), METALAB_CONFIG=str(cache / "no-config.toml"))
    return subprocess.run([LABCTL, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def ssh(record: dict[str, Any], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "BatchMode=yes", "-i", record["ansible_ssh_private_key_file"], "-p", str(record["ansible_port"]),
         f"{record['ansible_user']}@{record['ansible_host']}", command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def sandbox_inventory(*names: str, site_vars: dict[str, Any], extra_hosts: dict[str, Any] | None = None) -> dict:
    """`labctl sandbox inventory NAMES` (per-host connection and proxy) plus the lab's group vars."""
    data = yaml.safe_load(labctl("inventory", *names).stdout)
    data["all"]["vars"].update(site_vars)
    data["all"]["hosts"].update(extra_hosts or {})
    return data


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary(stdout: str) -> dict[str, dict[str, str]]:
    """host -> {status, ok, changed, ...} from the SUMMARY lines of `--plain` output."""
    rows: dict[str, dict[str, str]] = {}
    lines = stdout.splitlines()
    for line in lines[lines.index("SUMMARY") + 1 :]:
        if not line.startswith("  "):
            break
        host, *pairs = line.split()
        rows[host] = dict(pair.split("=", 1) for pair in pairs)
    return rows


def doctor_rows(result: subprocess.CompletedProcess[str], host: str) -> dict[str, dict[str, str]]:
    rows = json.loads(result.stdout)
    return {r["check"]: r for r in rows if r["host"] == host}


def wait_for(record: dict[str, Any], command: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ssh(record, command).returncode == 0:
            return True
        time.sleep(5)
    return False


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("labctl-cache")


# --- 1. provision: two hosts and an unreachable one ----------------------------------------------------------


@pytest.fixture(scope="class")
def pair(state_dir: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    try:
        yield up("lca"), up("lcb")
    finally:
        labctl("down", "lca", "lcb", check=False)


class TestTwoHostsAndAnUnreachableOne:
    """Two nspawn hosts (torn down after this class, so that at most 3 sandboxes ever run at once)."""

    def test_provision_two_hosts_and_an_unreachable_one(self, pair, cache, tmp_path):
        """~2 min: base,storage,lab_users on two nspawn hosts; the third host is a closed port on loopback."""
        a, b = pair
        gone = {  # nothing listens on port 9 of the loopback: a refused connection, at once
            "ansible_host": "127.0.0.1",
            "ansible_port": 9,
            "ansible_user": "labadmin",
            "ansible_ssh_private_key_file": a["ansible_ssh_private_key_file"],
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
        # A lab of several hosts homes each user on one of them (docs/inventory.md, the lab layout).
        users = [{"name": "alice", "quota": "1G", "host": "lca"}, {"name": "bob", "quota": "1G", "host": "lcb"}]
        site = {**NSPAWN_SITE, "lab_users": users}
        inventory = write_yaml(tmp_path / "hosts.yml", sandbox_inventory("lca", "lcb", site_vars=site,
                                                                          extra_hosts={"lc-gone": gone}))  # fmt: skip

        started = time.monotonic()
        result = run("provision", "-i", str(inventory), "--plain", "--tags", "base,storage,lab_users", cache=cache)
        took = time.monotonic() - started
        out = result.stdout
        assert result.returncode == 3, f"exit {result.returncode}\n{out}\n{result.stderr}"

        # Progress of both hosts, line by line, and the unreachable one named with its error.
        assert out.startswith("labctl: running site")
        assert "PLAY Provision metalab lab hosts" in out
        assert "TASK metalab.lab.lab_users : " in out
        for host in ("lca", "lcb"):
            assert f"  changed: {host}" in out and f"  ok: {host}" in out
        assert "  unreachable: lc-gone - " in out and "Connection refused" in out

        rows = summary(out)
        assert set(rows) == {"lca", "lcb", "lc-gone"}
        for host in ("lca", "lcb"):
            row = rows[host]
            assert (row["status"], row["failed"], row["unreachable"]) == ("changed", "0", "0"), row
            assert int(row["ok"]) >= int(row["changed"]) > 0
        assert rows["lc-gone"]["status"] == "unreachable" and rows["lc-gone"]["unreachable"] == "1"
        assert rows["lc-gone"]["ok"] == rows["lc-gone"]["changed"] == "0"
        assert "result: some hosts were unreachable" in out and "(exit 3)" in out

        # The kept artifacts are where labctl says, with the events of the run.
        artifacts = Path(out.split("artifacts: ", 1)[1].splitlines()[0])
        assert artifacts.parent == cache / "runner" / "artifacts"
        assert len(list((artifacts / "job_events").glob("*.json"))) > 20

        # The two reachable hosts really were provisioned, each with the account of the user homed there.
        for record, login in zip(pair, ("lab-alice", "lab-bob")):
            check = ssh(record, f"test -s {FACTS_FILE} && getent passwd {login}")
            assert check.returncode == 0, check.stderr
        print(f"provision, 2 hosts + 1 unreachable: {took:.0f}s")

    def test_check_mode_does_not_stick_to_later_runs(self, pair, cache, tmp_path):
        """~1 min. Reality: ansible-runner kept `--check --diff` in its private dir, so every run after a --check ran
        in check mode. A --check run, then a real one that adds a user: the user exists afterwards."""
        site = {**NSPAWN_SITE, "lab_users": [{"name": "alice", "quota": "1G"}, {"name": "bob"}]}
        inventory = write_yaml(tmp_path / "hosts.yml", sandbox_inventory("lca", site_vars=site))
        check = run("provision", "-i", str(inventory), "--plain", "--check", "--tags", "storage,lab_users", cache=cache)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "(check mode: nothing changes)" in check.stdout
        assert ssh(pair[0], "getent passwd lab-bob").returncode == 2, "--check changed nothing"

        real = run("provision", "-i", str(inventory), "--plain", "--tags", "storage,lab_users", cache=cache)
        assert real.returncode == 0, real.stdout + real.stderr
        assert summary(real.stdout)["lca"]["status"] == "changed"
        assert ssh(pair[0], "getent passwd lab-bob").returncode == 0


# --- 2 and 3. users --apply and doctor on a fully converged host -------------------------------------------------

USERS_FILE = """\
---
# Lab users of the labctl acceptance lab. labctl users edits this list in place:
# these comments, the order and the quoting must survive.
lab_users:
  - name: alice   # first student
    quota: "1G"
  # bob joined late; no quota given: lab_users_default_quota applies
  - name: bob
"""


@pytest.fixture(scope="module")
def site_host(state_dir: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """~5 min: one nspawn host with the whole site (runtimes included), converged once for this module.

    The inventory is a directory: hosts.yml (connection, site vars) and group_vars/all.yml (lab_users, commented).
    """
    try:
        record = up("lcs")
        directory = tmp_path_factory.mktemp("site-inventory")
        hosts = write_yaml(directory / "hosts.yml", sandbox_inventory("lcs", site_vars=NSPAWN_SITE))
        (directory / "group_vars").mkdir()
        (directory / "group_vars" / "all.yml").write_text(USERS_FILE)
        started = time.monotonic()
        result = run("provision", "-i", str(hosts), "--plain", cache=cache)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr
        print(f"full site converge: {time.monotonic() - started:.0f}s")
        record["inventory"] = str(hosts)
        yield record
    finally:
        labctl("down", "lcs", check=False)


def cached_facts(cache: Path, host: str) -> dict[str, Any]:
    """The facts labctl cached for host: in its own cache directory, kept from one run to the next."""
    (path,) = [p for p in (cache / "facts").glob("*" + host) if p.name == host or p.name.endswith("_" + host)]
    data = json.loads(path.read_text())
    payload = data.get("__payload__", data)  # ansible-core 2.19 wraps the facts in a serialised payload
    return json.loads(payload) if isinstance(payload, str) else payload


def test_provision_gathers_and_caches_only_the_facts_the_roles_read(site_host, cache):
    """The plays' gather_subset is in effect (ansible.cfg's setting is ignored since ansible-core 2.18), and the
    facts outlive the run (ansible-runner's default is a fresh cache per run: gathering at every provision)."""
    facts = cached_facts(cache, "lcs")
    for needed in ("ansible_distribution", "ansible_distribution_major_version", "ansible_os_family",
                   "ansible_pkg_mgr", "ansible_service_mgr", "ansible_architecture"):  # fmt: skip
        assert needed in facts, f"{needed} missing from the cached facts"
    slow = {"ansible_devices", "ansible_mounts", "ansible_interfaces", "ansible_env", "ansible_virtualization_type"}
    assert not slow & set(facts), f"facts gathered that no role reads: {sorted(slow & set(facts))}"
    assert len(json.dumps(facts)) < 8000


def test_users_add_keeps_comments_and_apply_creates_the_account(site_host, cache):
    """~1.5 min: add (file diffed), refuse bad input untouched, --apply; remove --apply archives and removes."""
    inventory = site_host["inventory"]
    users_file = Path(inventory).parent / "group_vars" / "all.yml"
    before = users_file.read_text()

    for bad in (["Bad_Name"], ["alice"], ["erin", "--quota", "15GG"]):
        refused = run("users", "add", *bad, "-i", inventory, cache=cache)
        assert refused.returncode != 0 and refused.stderr.strip(), refused
        assert users_file.read_text() == before, f"{bad} left the file as it was"

    added = run("users", "add", "dave", "--quota", "2G", "-i", inventory, "--apply", "--plain", cache=cache)
    assert added.returncode == 0, added.stdout[-4000:] + added.stderr
    after = users_file.read_text()
    diff = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]
    assert all(line.startswith("+ ") for line in diff), diff  # nothing removed or rewritten: only lines added
    assert after.startswith(before)
    assert yaml.safe_load(after)["lab_users"][-1] == {"name": "dave", "quota": "2G", "gpu": False}
    assert summary(added.stdout)["lcs"]["failed"] == "0"
    # The account, and the runtime side knows the new user (front door location, guard config).
    check = ssh(site_host, "getent passwd lab-dave && sudo grep -q '/user/dave/' /etc/nginx/conf.d/metalab.conf "
                           "&& sudo grep -q '\"dave\"' /etc/metalab/guard.json")  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    removed = run("users", "remove", "dave", "-i", inventory, "--apply", "--plain", cache=cache)
    assert removed.returncode == 0, removed.stdout[-4000:] + removed.stderr
    assert "state: absent" in users_file.read_text()
    assert ssh(site_host, "getent passwd lab-dave").returncode == 2, "the account is gone"
    archives = ssh(site_host, "sudo ls /srv/metalab/archive").stdout.split()
    assert any(name.startswith("lab-dave-") and name.endswith(".tar.gz") for name in archives), archives
    assert ssh(site_host, "sudo grep -q '\"dave\"' /etc/metalab/guard.json").returncode == 1


def test_doctor_all_green_then_names_a_missing_guard_cron(site_host, cache):
    """~1 min: doctor on the converged host; then without /etc/cron.d/metalab-guard."""
    inventory = site_host["inventory"]
    # cron runs the guard every minute; right after the converge its first run may still be ahead.
    assert wait_for(site_host, f"sudo test -e {GUARD_MARKER}", 90), "the guard never ran from cron"

    green = run("doctor", "-i", inventory, "--json", cache=cache)
    assert green.returncode == 0, green.stdout + green.stderr
    rows = doctor_rows(green, "lcs")
    statuses = {check: row["status"] for check, row in rows.items()}
    assert statuses == {
        "reachable": "ok",
        "supported OS": "ok",
        "homes volume": "n/a",  # lab_homes_device: none on nspawn (no NVMe, no quotas)
        "podman": "ok",
        "runtime image": "ok",
        "front door :443": "ok",
        "guard cron": "ok",
        "guard ran recently": "ok",
        "guard lock": "ok",
        "backup": "n/a",  # no lab_backup_repository (tests/sandbox/test_backup.py has a host with backups)
    }, rows
    assert rows["runtime image"]["detail"] == "localhost/metalab/runtime:0.1.0"
    controller = [r for r in json.loads(green.stdout) if r["host"] == "(controller)"]
    assert {r["check"] for r in controller} >= {"inventory parses", "lab_users valid", "ssh key readable"}
    assert all(r["status"] in ("ok", "warn") for r in controller), controller

    assert ssh(site_host, f"sudo mv {GUARD_CRON} /root/metalab-guard.cron").returncode == 0
    try:
        broken = run("doctor", "-i", inventory, cache=cache)  # the table an admin reads
        assert broken.returncode == 2, broken.stdout + broken.stderr
        row = next(line for line in broken.stdout.splitlines() if "guard cron" in line)
        assert "fail" in row and GUARD_CRON in row, broken.stdout
        assert "is missing" in broken.stdout and "--tags runtimes" in broken.stdout
    finally:
        ssh(site_host, f"sudo mv /root/metalab-guard.cron {GUARD_CRON}")


# --- 3b. doctor and an unmounted homes volume (VM) -----------------------------------------------------------------


@pytest.mark.vm
def test_doctor_names_an_unmounted_homes_volume(state_dir, cache, tmp_path):
    """~3 min (software-emulated VM): storage with lab_homes_device auto; doctor ok, umount, doctor names it.

    Only the storage role: the image already has xfsprogs and quota, and base would add minutes of emulated apt.
    """
    try:
        vm = up("lcv", "--vm", "--nvme-size", "2G")
        site = {"lab_homes_device": "auto", "lab_users": []}
        inventory = write_yaml(tmp_path / "hosts.yml", sandbox_inventory("lcv", site_vars=site))
        converge = run("provision", "-i", str(inventory), "--plain", "--tags", "storage", cache=cache)
        assert converge.returncode == 0, converge.stdout[-4000:] + converge.stderr

        healthy = run("doctor", "-i", str(inventory), "--json", cache=cache)
        homes = doctor_rows(healthy, "lcv")["homes volume"]
        assert homes["status"] == "ok" and "/dev/nvme0n1" in homes["detail"], homes

        assert ssh(vm, "sudo umount /srv/metalab/homes").returncode == 0
        broken = run("doctor", "-i", str(inventory), "--json", cache=cache)
        assert broken.returncode == 2, broken.stdout + broken.stderr
        homes = doctor_rows(broken, "lcv")["homes volume"]
        assert homes["status"] == "fail", homes
        assert "nothing is mounted at /srv/metalab/homes" in homes["detail"] and homes["action"]
    finally:
        labctl("down", "lcv", check=False)
