"""Attacks on the host boundary: a lab user never gets a process on the host outside her runtime (issue 15, #1),
and the host admits only what the lab serves.

Each attack is paired with the legitimate action through the same helper, so a broken harness cannot pass:
alice's key is refused where the same fresh key in the admin's authorized_keys logs in; the admin's su, cron and
user manager work where alice's do not; the front door's and SSH's ports answer where a listener on another port
does not. ssh and TCP connections are made from the controller, like an attacker on the network would.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from conftest import ok, requirement_missing, root, wait_for

ADMIN_MARK = "/var/tmp/metalab-attack-cron-admin"
ALICE_MARK = "/var/tmp/metalab-attack-cron-alice"
UNADMITTED_PORT = 18099


@pytest.fixture(scope="module")
def target(host):
    variables = host.backend.get_variables()
    return {
        "address": variables.get("ansible_host") or host.backend.host,
        "port": int(variables.get("ansible_port") or 22),
        "admin": variables.get("ansible_user") or "root",
        # molecule's inventory names it ansible_private_key_file; labctl sandbox inventory ansible_ssh_private_key_file
        "admin_key": variables.get("ansible_ssh_private_key_file") or variables.get("ansible_private_key_file"),
        "https_port": int(variables.get("metalab_sandbox_https_port") or 443),
    }


def ssh_login(target, user, key, command="id -un"):
    """A real ssh client on the controller: key only, no agent, no prompt."""
    argv = [
        "ssh",
        "-i",
        str(key),
        "-p",
        str(target["port"]),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "LogLevel=ERROR",
        f"{user}@{target['address']}",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def tcp_open(address, port, timeout=5.0):
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def uid_gid(host, login):
    return ok(host, "id -u %s", login).strip(), ok(host, "id -g %s", login).strip()


@pytest.fixture(scope="module")
def alice_runtime(host):
    """alice's runtime, running (started here when it is not, stopped again after)."""
    started = root(host, "podman container exists metalab-alice").rc != 0
    if started:
        ok(host, "metalab-guard start alice")
    wait_for(lambda: root(host, "podman exec metalab-alice true").rc == 0, 60, "alice's runtime running")
    yield "metalab-alice"
    if started:
        root(host, "metalab-guard stop alice")


@pytest.fixture
def fresh_key(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "attack", "-f", str(key)], check=True)
    return key, (tmp_path / "id_ed25519.pub").read_text().strip()


def test_key_written_from_the_runtime_does_not_open_a_host_shell(host, target, alice_runtime, fresh_key):
    key, public = fresh_key
    uid, gid = uid_gid(host, "lab-alice")
    # As alice in her JupyterLab terminal: her home is lab-alice's home on the host.
    script = (
        "cd /home/studio-lab-user && mkdir -p .ssh && chmod 700 .ssh && printf '%s\\n' \"$1\" >> "
        ".ssh/authorized_keys && chmod 600 .ssh/authorized_keys"
    )
    written = root(host, "podman exec --user %s:%s %s sh -c %s sh %s", uid, gid, alice_runtime, script, public)
    assert written.rc == 0, written.stderr
    admin_keys = f"~{target['admin']}/.ssh/authorized_keys"
    ok(host, f"cp -p {admin_keys} {admin_keys}.attack-test && echo %s >> {admin_keys}", public)
    try:
        # The legitimate action: the same fresh key, in the admin's authorized_keys, logs in.
        admin = ssh_login(target, target["admin"], key)
        assert admin.returncode == 0, admin.stderr
        assert admin.stdout.strip() == target["admin"]
        # The attack: alice's key in her own home opens nothing.
        alice = ssh_login(target, "lab-alice", key)
        assert alice.returncode != 0, f"lab-alice logged in on the host: {alice.stdout}"
        assert "lab-alice" not in alice.stdout
    finally:
        ok(host, f"mv {admin_keys}.attack-test {admin_keys}")
        root(host, "rm -f /srv/metalab/homes/alice/.ssh/authorized_keys")
    # And the inventory's key still logs the admin in (the path ansible itself uses).
    inventory = ssh_login(target, target["admin"], target["admin_key"])
    assert inventory.returncode == 0 and inventory.stdout.strip() == target["admin"], inventory.stderr


def test_sshd_refuses_the_lab_group_and_keeps_admins(host, target):
    for user, denied in (("lab-alice", True), (target["admin"], False)):
        config = ok(host, f"sshd -T -C user={user},host=attacker,addr=192.0.2.1")
        groups = [line.split(None, 1)[1] for line in config.splitlines() if line.startswith("denygroups ")]
        assert ("labusers" in " ".join(groups)) is True, config
        keys = [line for line in config.splitlines() if line.startswith("authorizedkeysfile ")]
        assert (keys == ["authorizedkeysfile none"]) is denied, keys
    assert ok(host, "sshd -T").count("\nx11forwarding no") == 1


@pytest.mark.parametrize("login", ["lab-alice", "lab-bob"])
def test_lab_accounts_have_no_login_shell(host, login):
    assert host.user(login).shell == "/usr/sbin/nologin"
    # runuser -l runs the account's shell: nologin refuses. The admin's works through the same command.
    assert root(host, "runuser -l %s -c id", login).rc != 0


def test_admin_login_shell_works(host, target):
    assert ok(host, "runuser -l %s -c 'id -un'", target["admin"]).strip() == target["admin"]


def test_su_to_a_lab_account_is_refused_even_with_a_shell(host, target):
    # Even root's su with an explicit shell: pam_access refuses the lab group in su's account stack.
    alice = root(host, "su -s /bin/sh lab-alice -c id")
    assert alice.rc != 0, alice.stdout
    assert "uid=" not in alice.stdout
    admin = root(host, "su -s /bin/sh %s -c 'id -un'", target["admin"])
    assert admin.rc == 0 and admin.stdout.strip() == target["admin"], admin.stderr


def test_crontab_of_a_lab_account_never_runs(host, target):
    spool = "/var/spool/cron/crontabs"
    root(host, f"rm -f {ADMIN_MARK} {ALICE_MARK}")
    try:
        for login, mark in ((target["admin"], ADMIN_MARK), ("lab-alice", ALICE_MARK)):
            # A crontab placed by hand (as if made before the role ran): cron.deny is not what stops it.
            ok(host, f"install -o {login} -g crontab -m 0600 /dev/null {spool}/{login}")
            ok(host, f"echo '* * * * * touch {mark}' > {spool}/{login}")
        ok(host, f"touch {spool}")  # cron rereads the spool when its mtime changes
        wait_for(lambda: host.file(ADMIN_MARK).exists, 130, "the admin's cron job running")
        time.sleep(5)
        assert not host.file(ALICE_MARK).exists, "lab-alice's cron job ran"
        log = root(host, "journalctl -u cron --since '-3min' --no-pager").stdout
        assert "lab-alice" in log and ("access denied" in log.lower() or "permission denied" in log.lower()), log
    finally:
        root(host, f"rm -f {spool}/{target['admin']} {spool}/lab-alice {ADMIN_MARK} {ALICE_MARK}")


def test_at_jobs_refused_for_lab_accounts(host, target):
    if root(host, "command -v at").rc != 0:
        requirement_missing("at is not installed on this host (base writes at.deny and atd's pam_access where it is)")
    assert root(host, "echo true | runuser -u lab-alice -- at now + 10 minutes").rc != 0
    admin = root(host, "echo true | runuser -u %s -- at now + 10 minutes", target["admin"])
    assert admin.rc == 0, admin.stderr
    root(host, "for job in $(runuser -u %s -- atq | cut -f1); do atrm $job; done", target["admin"])


def test_no_systemd_user_manager_for_lab_accounts(host, target):
    alice_uid, _ = uid_gid(host, "lab-alice")
    admin_uid, _ = uid_gid(host, target["admin"])
    try:
        # The legitimate action: the admin's user manager starts (PAM service systemd-user).
        admin = root(host, "systemctl start user@%s.service", admin_uid)
        assert admin.rc == 0, admin.stderr
        assert root(host, "systemctl is-active user@%s.service", admin_uid).stdout.strip() == "active"
        # The attack (what lingering or a login would start): refused by PAM.
        alice = root(host, "systemctl start user@%s.service", alice_uid)
        assert alice.rc != 0
        assert root(host, "systemctl is-active user@%s.service", alice_uid).stdout.strip() != "active"
    finally:
        root(host, "systemctl stop user@%s.service user@%s.service", admin_uid, alice_uid)
        root(host, "systemctl reset-failed user@%s.service", alice_uid)
    assert "lab-" not in root(host, "ls -A /var/lib/systemd/linger").stdout


def test_firewall_drops_unadmitted_ports_and_admits_the_lab(host, target):
    pid = ok(
        host,
        'cd "$(mktemp -d)"; nohup python3 -m http.server %s --bind 0.0.0.0 >/dev/null 2>&1 & echo $!',
        str(UNADMITTED_PORT),
    ).strip()
    try:
        # The listener is up: the host itself reaches it over loopback.
        wait_for(
            lambda: root(host, "curl -s -o /dev/null http://127.0.0.1:%s/", str(UNADMITTED_PORT)).rc == 0,
            20,
            "the test listener answering on the host",
        )
        assert tcp_open(target["address"], target["https_port"]), "the front door's HTTPS port"
        assert tcp_open(target["address"], target["port"]), "SSH from the admin's network"
        assert not tcp_open(target["address"], UNADMITTED_PORT), "a port the lab does not serve answered"
    finally:
        root(host, "kill %s", pid)
    tables = ok(host, "nft list tables")
    assert "table inet metalab" in tables
    assert "policy drop" in ok(host, "nft list chain inet metalab input")


def test_homes_mounted_nosuid_nodev(host):
    options = ok(host, "findmnt -no OPTIONS --target /srv/metalab/homes").strip().split(",")
    assert "nosuid" in options and "nodev" in options, options


def test_setuid_file_in_a_home_gives_nothing(host):
    # A set-uid root program in a home (as if dropped there) runs without privilege; the same file outside the
    # homes volume runs as root, so the check itself works.
    inside, outside = "/srv/metalab/homes/alice/.suid-id", "/var/tmp/metalab-attack-suid-id"
    try:
        for path in (inside, outside):
            ok(host, "install -o root -g root -m 4755 /usr/bin/id %s", path)
        assert ok(host, "runuser -u lab-alice -- %s -u", outside).strip() == "0"
        assert ok(host, "runuser -u lab-alice -- %s -u", inside).strip() == uid_gid(host, "lab-alice")[0]
    finally:
        root(host, "rm -f %s %s", inside, outside)
