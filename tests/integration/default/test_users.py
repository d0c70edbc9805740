"""Lab accounts and multi-tenant hardening on a converged nspawn lab host."""

import pytest

HOMES = "/srv/metalab/homes"


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_account_home_and_groups(host, name):
    user = host.user(f"lab-{name}")
    assert user.exists
    assert user.uid >= 20000
    assert user.home == f"{HOMES}/{name}"
    assert user.shell == "/usr/sbin/nologin"  # lab accounts own files and run containers, never log in
    assert set(user.groups) == {f"lab-{name}", "labusers"}, "in no privileged group"
    home = host.file(user.home)
    assert home.is_directory
    assert home.user == f"lab-{name}"
    assert home.mode == 0o700


def test_uids_are_distinct_and_stable(host):
    alice, bob = host.user("lab-alice"), host.user("lab-bob")
    assert alice.uid != bob.uid
    assert host.file("/var/lib/metalab/lab_users.json").contains('"lab-alice"')


def test_absent_user_has_no_account(host):
    assert not host.user("lab-carol").exists
    assert not host.file(f"{HOMES}/carol").exists


def test_lab_user_has_no_sudo(host):
    result = host.run("runuser -u lab-alice -- sudo -n true")
    assert result.rc != 0


def test_lab_user_cannot_read_another_home(host):
    result = host.run(f"runuser -u lab-bob -- ls {HOMES}/alice")
    assert result.rc != 0
    assert "Permission denied" in result.stderr


def test_lab_user_cannot_create_a_crontab(host):
    result = host.run("echo '* * * * * true' | runuser -u lab-alice -- crontab -")
    assert result.rc != 0
    assert "not allowed" in (result.stderr + result.stdout)


def test_admin_keeps_crontab_and_sudo(host):
    assert host.run("runuser -u labadmin -- sudo -n true").rc == 0
    assert host.run("runuser -u labadmin -- crontab -l").rc in (0, 1)  # 1: no crontab yet, but allowed


def test_lab_user_gets_no_core_dumps_and_a_private_umask(host):
    # runuser as root with an explicit shell: the account itself has none (nologin)
    result = host.run("runuser -l lab-alice -s /bin/bash -c 'ulimit -H -c; umask'")
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["0", "0027"]


def test_admin_umask_unchanged(host):
    assert host.run("runuser -l labadmin -c umask").stdout.strip() == "0022"
