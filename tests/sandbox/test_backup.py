"""Backups over SFTP between two nspawn sandboxes on the lab network (issue 21).

bk-target is the inventory's lab_backup_target (role backup_target: one SFTP-only account per lab host, each in its
own chroot); bk-lab is a lab host (base, storage, lab_users, backup) whose restic repository is
sftp:mlb-bk-lab@<bk-target's lab_address>:/repo on the sandbox lab network, with a test schedule (every 30 s,
5 s randomized delay). The target has a second client, bk-other (no sandbox: a key the test makes), and the files
of the earlier one-account layout, which the converge must leave alone. One converge is shared by every test
(module fixture); the tests then run in file order: rerun changed=0 (tags backup,backup_target), the isolation of
the accounts, a snapshot on the schedule, restores through labctl, the refusals and failures. 3-6 minutes on the
shared 2-core development machine (2m42s to 5m34s measured), most of them the sandboxes, the converge and its rerun
(16 s with those tags); the backups themselves take seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LABCTL, failures, labctl, playbook, recap, ssh, up

pytestmark = pytest.mark.sandbox

LAB, TARGET = "bk-lab", "bk-target"
OTHER = "bk-other"  # a second client of the target: an account, no sandbox
TAGS = "base,storage,lab_users,backup"
# The rerun: the backup roles only (the other roles' idempotence is tested elsewhere); common runs as a dependency.
RERUN_TAGS = "backup,backup_target"
ROOT = "/srv/metalab-backup"
# The lab host's own key, as restic uses it.
KEY = "-i /etc/metalab/backup/id_ed25519 -o UserKnownHostsFile=/etc/metalab/backup/known_hosts -o BatchMode=yes"
OTHER_KEY = "/root/bk-other-key"
# The earlier layout (one account metalab-backup, a folder per host, one keys file), made before the converge.
OLD_LAYOUT = (
    f"getent passwd metalab-backup || useradd --system --user-group --home-dir {ROOT} --shell /usr/sbin/nologin"
    f" metalab-backup; install -d -m 0755 {ROOT} /etc/ssh/metalab-backup;"
    f" install -d -o metalab-backup -g metalab-backup -m 0700 {ROOT}/old-host;"
    f" echo old-repository > {ROOT}/old-host/config;"
    " echo 'restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOld metalab-backup@old-host'"
    " > /etc/ssh/metalab-backup/authorized_keys"
)
PASSWORD = "correct horse battery staple"
LAB_VARS: dict[str, Any] = {
    "lab_homes_device": "none",
    "lab_quota_required": False,
    "runtime_image_base_from_host": True,
    "lab_portal_enabled": False,
    # alice's restores fit; bob's 6 MiB file does not fit twice into his 10 MiB quota.
    "lab_users": [{"name": "alice", "quota": "1G"}, {"name": "bob", "quota": "10M"}],
    "lab_backup_password": PASSWORD,
    "lab_backup_schedule": "*:*:0/30",
    "lab_backup_randomized_delay": "5s",
    "lab_backup_check_schedule": "hourly",
    "lab_backup_max_age": "1h",
}
STATE = "/var/lib/metalab/backup"
OLD_FILES = f"cat {ROOT}/old-host/config /etc/ssh/metalab-backup/authorized_keys"


def sh(record: dict[str, Any], command: str, check: bool = True) -> str:
    """A root shell command on a sandbox; its stdout."""
    result = ssh(record, f"sudo bash -c {json.dumps(command)}")
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def tree(record: dict[str, Any], home: str) -> str:
    """Every file of a home with its checksum, owner and mode, sorted: equal trees, equal strings."""
    return sh(record, f"cd {home} && find . -type f -printf '%P %u %m ' -exec sha256sum {{}} \\; | sort")


class Lab:
    def __init__(self, records: dict[str, dict[str, Any]], inventory: Path, cache: Path, converge_s: float):
        self.records, self.inventory, self.cache, self.converge_s = records, inventory, cache, converge_s
        self.lab, self.target = records[LAB], records[TARGET]

    def labctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`labctl ARGS -i INVENTORY` as an admin types it, with private artifacts and no personal config."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("METALAB_") or k == "METALAB_SANDBOX_DIR"}
        env.update(METALAB_CACHE=str(self.cache), METALAB_CONFIG=str(self.cache / "no-config.toml"))
        argv = [LABCTL, *args, "-i", str(self.inventory)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)

    def status(self) -> dict[str, Any]:
        result = self.labctl("backup", "status", "--json", "--host", LAB)
        rows = json.loads(result.stdout)
        assert len(rows) == 1, result.stdout + result.stderr
        return dict(rows[0], exit_code=result.returncode)

    def home(self, user: str) -> str:
        return sh(self.lab, f"getent passwd lab-{user} | cut -d: -f6").strip()


@pytest.fixture(scope="module")
def lab(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("backup")
    try:
        records = {name: up(name) for name in (LAB, TARGET)}
        sandboxes = yaml.safe_load(labctl("inventory", LAB, TARGET).stdout)
        target_address = sandboxes["all"]["hosts"][TARGET]["lab_address"]
        sandboxes["all"]["children"]["lab_backup_target"] = {"hosts": {TARGET: None}}
        sandboxes["all"]["hosts"][LAB]["lab_backup_repository"] = f"sftp:mlb-{LAB}@{target_address}:/repo"
        sandboxes["all"]["hosts"][TARGET]["backup_target_clients"] = [LAB, OTHER]
        sandboxes["all"]["vars"].update(LAB_VARS)
        inventory = tmp / "inventory.yml"
        inventory.write_text(yaml.safe_dump(sandboxes))
        sh(records[TARGET], OLD_LAYOUT)
        old_layout = sh(records[TARGET], f"stat -c '%n %U %a' {ROOT}/old-host {ROOT}/old-host/config; {OLD_FILES}")
        started = time.monotonic()
        converge = playbook("site.yml", inventory, tags=TAGS)
        assert converge.returncode == 0, failures(converge)
        converge_s = time.monotonic() - started
        # The earlier layout's files are as they were.
        assert (
            sh(records[TARGET], f"stat -c '%n %U %a' {ROOT}/old-host {ROOT}/old-host/config; {OLD_FILES}") == old_layout
        )
        yield Lab(records, inventory, tmp / "cache", converge_s)
    finally:
        labctl("down", LAB, TARGET, check=False)


def test_rerun_of_site_changes_nothing(lab: Lab) -> None:
    rerun = playbook("site.yml", lab.inventory, tags=RERUN_TAGS)
    assert rerun.returncode == 0, failures(rerun)
    totals = recap(rerun.stdout)
    assert {host: t["changed"] for host, t in totals.items()} == {LAB: 0, TARGET: 0}, failures(rerun)


def test_target_is_sftp_only_in_its_chroot(lab: Lab) -> None:
    # The lab host's own key, as restic uses it: SFTP works (its repository is there), a shell does not.
    address = lab.target["lab_address"]
    listing = sh(lab.lab, f"echo 'ls /repo' | sftp {KEY} -b - mlb-{LAB}@{address}")
    assert "/repo/config" in listing, listing
    shell = ssh(lab.lab, f"sudo ssh {KEY} mlb-{LAB}@{address} id")
    assert shell.returncode != 0 and "uid=" not in shell.stdout
    modes = sh(lab.target, f"stat -c '%U %a' {ROOT} {ROOT}/mlb-{LAB} {ROOT}/mlb-{LAB}/repo").splitlines()
    assert modes == ["root 755", "root 755", f"mlb-{LAB} 700"]
    # Its key is in its own account's file only.
    keys = sh(lab.target, "grep -l metalab-backup@bk-lab /etc/ssh/metalab-backup/* || true").split()
    assert keys == [f"/etc/ssh/metalab-backup/mlb-{LAB}"], keys


def sftp(lab: Lab, key: str, account: str, *commands: str) -> subprocess.CompletedProcess[str]:
    """`sftp -b` on the lab host with KEY as ACCOUNT on the target, one line per command; stops at the first error."""
    lines = " ".join(shlex.quote(c) for c in commands)
    script = f"printf '%s\\n' {lines} | sftp {key} -b - {account}@{lab.target['lab_address']}"
    return ssh(lab.lab, f"sudo bash -c {shlex.quote(script)}")


def test_a_lab_hosts_key_reaches_its_own_repository_only(lab: Lab) -> None:
    # The second client: its own key in its own account's file, and a file in its repository (put with its key).
    sh(lab.lab, f"test -e {OTHER_KEY} || ssh-keygen -q -t ed25519 -N '' -C test@{OTHER} -f {OTHER_KEY}")
    public = sh(lab.lab, f"cat {OTHER_KEY}.pub").strip()
    sh(lab.target, f"echo 'restrict {public}' > /etc/ssh/metalab-backup/mlb-{OTHER}")
    other_key = KEY.replace("/etc/metalab/backup/id_ed25519", OTHER_KEY)
    sh(lab.lab, "echo 'backups of bk-other' > /root/other-secret")
    put = sftp(lab, other_key, f"mlb-{OTHER}", "put /root/other-secret /repo/secret", "ls /repo")
    assert put.returncode == 0 and "/repo/secret" in put.stdout, put.stdout + put.stderr
    # Legitimate: the lab host lists, writes, reads and deletes in its own repository.
    own = sftp(lab, KEY, f"mlb-{LAB}", "ls /", "put /root/other-secret /repo/probe", "get /repo/probe /root/probe.back",
               "ls /repo", "rm /repo/probe")  # fmt: skip
    assert own.returncode == 0 and "/repo/config" in own.stdout and "/repo/probe" in own.stdout, own.stdout + own.stderr
    assert sh(lab.lab, "cat /root/probe.back").strip() == "backups of bk-other"
    assert "/repo/probe" not in sftp(lab, KEY, f"mlb-{LAB}", "ls /repo").stdout
    # Its chroot holds its repository only: nothing of the other client, nor of the earlier layout, is in sight.
    root = sftp(lab, KEY, f"mlb-{LAB}", "ls -a /")
    assert root.returncode == 0 and OTHER not in root.stdout and "old-host" not in root.stdout, root.stdout
    # The attack: the other client's folder, by every path, can neither be listed, read nor deleted.
    for path in ("/../mlb-bk-other/repo", f"{ROOT}/mlb-{OTHER}/repo", "/mlb-bk-other/repo"):
        for command in (f"ls {path}", f"get {path}/secret /root/stolen", f"rm {path}/secret"):
            attempt = sftp(lab, KEY, f"mlb-{LAB}", command)
            assert attempt.returncode != 0, f"{command}: {attempt.stdout}{attempt.stderr}"
    assert sh(lab.lab, "test -e /root/stolen && echo yes || echo no").strip() == "no"
    # Nor with the other account's name and the lab host's key; the earlier shared account is shut.
    for account in (f"mlb-{OTHER}", "metalab-backup"):
        assert sftp(lab, KEY, account, "ls /").returncode != 0, account
    assert sh(lab.target, f"cat {ROOT}/mlb-{OTHER}/repo/secret").strip() == "backups of bk-other"


def test_snapshot_appears_on_the_schedule(lab: Lab) -> None:
    for user, size in (("alice", 3), ("bob", 6)):
        home = lab.home(user)
        sh(lab.lab, f"mkdir -p {home}/notebooks && head -c {size}M /dev/urandom > {home}/notebooks/data.bin && "
                    f"seq 1 200000 > {home}/notebooks/numbers.txt && chmod 640 {home}/notebooks/numbers.txt && "
                    f"chown -R lab-{user}: {home}/notebooks")  # fmt: skip
    written = time.time()
    deadline = time.monotonic() + 180
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = json.loads(sh(lab.lab, "metalab-backup status --json"))
        snap = status.get("last_snapshot") or {}
        if snap and snap.get("time") and _epoch(snap["time"]) > written:
            break
        time.sleep(5)
    else:
        pytest.fail(f"no snapshot on the 30 s schedule within 180 s: {status}")
    row = lab.status()
    assert (row["state"], row["stale"], row["exit_code"]) == ("ok", False, 0), row
    assert row["snapshot"] and status["last_snapshot"]["id"].startswith(row["snapshot"]), (row, status)
    # The timer's service made it (nothing else starts metalab-backup.service here), with the data over SFTP in:
    shown = sh(lab.lab, "systemctl show metalab-backup.service -p ExecMainStatus -p ExecMainExitTimestamp")
    assert "ExecMainStatus=0" in shown and "ExecMainExitTimestamp=\n" not in shown + "\n", shown
    first = json.loads(sh(lab.lab, f"cat {STATE}/status.json")).get("last_run") or {}
    print(f"\nfirst backup over SFTP (by the timer): {first}")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def quiet(lab: Lab) -> Iterator[Lab]:
    """The schedule off for the tests that run backups themselves (a timer run would make them busy)."""
    sh(
        lab.lab,
        "systemctl stop metalab-backup.timer; while systemctl is-active -q metalab-backup.service; do sleep 1; done",
    )
    yield lab
    sh(lab.lab, "systemctl start metalab-backup.timer")


def test_labctl_run_and_measure(quiet: Lab) -> None:
    lab = quiet
    started = time.monotonic()
    run = lab.labctl("backup", "run", "--host", LAB)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{LAB}: backed up, snapshot" in run.stdout
    homes = int(sh(lab.lab, "du -sb /srv/metalab/homes | cut -f1"))
    repo = int(sh(lab.target, f"du -sb {ROOT}/mlb-{LAB}/repo | cut -f1"))
    print(f"\nbackup numbers: converge {lab.converge_s:.0f}s, labctl backup run {elapsed:.1f}s ({run.stdout.strip()}),"
          f" homes {homes} bytes, repository {repo} bytes")  # fmt: skip
    assert 0 < repo < 2 * homes


def test_deleted_files_come_back_byte_identical_in_a_dated_folder(quiet: Lab) -> None:
    lab = quiet
    home = lab.home("alice")
    before = tree(lab.lab, f"{home}/notebooks")
    sh(lab.lab, f"rm -rf {home}/notebooks/data.bin && echo 'written after the backup' > {home}/notebooks/numbers.txt")
    current = tree(lab.lab, f"{home}/notebooks")
    result = lab.labctl("users", "restore", "alice", "--path", "notebooks")
    assert result.returncode == 0, result.stdout + result.stderr
    folder = result.stdout.strip().splitlines()[-1]
    assert folder.startswith(f"{home}/restored/"), folder
    # The folder holds notebooks/ as it was (byte-identical, owner and mode kept); her current files are untouched.
    assert tree(lab.lab, f"{folder}/notebooks") == before
    assert tree(lab.lab, f"{home}/notebooks") == current


def test_restore_that_does_not_fit_the_quota_is_refused(quiet: Lab) -> None:
    lab = quiet
    home = lab.home("bob")
    before = tree(lab.lab, home)
    result = lab.labctl("users", "restore", "bob")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused" in result.stderr and "quota" in result.stderr
    assert tree(lab.lab, home) == before
    assert sh(lab.lab, f"test -e {home}/restored && echo yes || echo no").strip() == "no"


def test_concurrent_run_is_refused(quiet: Lab) -> None:
    lab = quiet
    holder = ssh(lab.lab, f"sudo systemd-run --unit=bk-test-hold --collect flock {STATE}/lock sleep 60")
    assert holder.returncode == 0, holder.stderr
    try:
        time.sleep(1)
        result = lab.labctl("backup", "run", "--host", LAB)
        assert result.returncode == 75, result.stdout + result.stderr
        assert "another backup is running on this host" in result.stderr
    finally:
        sh(lab.lab, "systemctl stop bk-test-hold", check=False)
    again = lab.labctl("backup", "run", "--host", LAB)
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize(
    ("break_it", "repair", "message"),
    [
        (
            "cp -a /etc/metalab/backup/password /root/password.good && echo wrong > /etc/metalab/backup/password",
            "mv /root/password.good /etc/metalab/backup/password",
            "password",
        ),
        ("ip link set lab0 down", "ip link set lab0 up", "unreachable"),
    ],
    ids=["wrong-password", "unreachable-target"],
)
def test_failures_show_in_status_and_doctor_and_change_nothing(quiet: Lab, break_it: str, repair: str, message: str):
    lab = quiet
    homes = tree(lab.lab, "/srv/metalab/homes")
    sh(lab.lab, break_it)
    try:
        run = lab.labctl("backup", "run", "--host", LAB)
        assert run.returncode == 1, run.stdout + run.stderr
        assert message in run.stderr.lower(), run.stderr
        row = lab.status()
        assert row["state"] == "error" and message in row["error"].lower(), row
        assert row["exit_code"] == 2
        doctor = lab.labctl("doctor", "--limit", LAB, "--json")
        backup_rows = [r for r in json.loads(doctor.stdout) if r["check"] == "backup"]
        assert [r["status"] for r in backup_rows] == ["fail"], doctor.stdout
        assert message in backup_rows[0]["detail"].lower()
        assert doctor.returncode == 2
        assert tree(lab.lab, "/srv/metalab/homes") == homes
    finally:
        sh(lab.lab, repair)
