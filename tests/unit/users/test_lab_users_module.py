"""The lab_users module with a scripted run_command: changed / idempotent / check mode / failure / archive."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from ansible.module_utils import basic
from ansible_collections.metalab.lab.plugins.modules import lab_users

from metalab.rules import validate_users

PASSWD = "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n"
GROUP = "root:x:0:\nsudo:x:27:admin\nadmin:x:1000:\n"


class Host:
    """A fake host: passwd/group text and quota report, updated by the commands the module runs."""

    def __init__(self, passwd=PASSWD, group=GROUP, quotas=""):
        self.passwd, self.group, self.quotas = passwd, group, quotas
        self.calls = []
        self.fail = {}

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        if argv[0] in self.fail:
            return self.fail[argv[0]]
        if os.path.basename(argv[0]) == "tar":  # the real GNU tar: archives are checked by reading them
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            return done.returncode, done.stdout, done.stderr
        if argv[:2] == ["getent", "passwd"]:
            return 0, self.passwd, ""
        if argv[:2] == ["getent", "group"]:
            if len(argv) == 3:
                found = [line for line in self.group.splitlines() if line.startswith(argv[2] + ":")]
                return (0, found[0], "") if found else (2, "", "")
            return 0, self.group, ""
        if argv[0] == "xfs_quota" and argv[3].startswith("report"):
            return 0, self.quotas, ""
        if argv[0] == "xfs_quota" and argv[3].startswith("limit"):
            _limit, _u, soft, hard, uid = argv[3].split()
            lines = [line for line in self.quotas.splitlines() if not line.startswith("#" + uid + " ")]
            lines.append("#{} 0 {} {} 00 [--------]".format(uid, soft.split("=")[1], hard.split("=")[1].rstrip("k")))
            self.quotas = "\n".join(lines) + "\n"
            return 0, "", ""
        if argv[0] == "groupadd":
            self.group += f"{argv[-1]}:x:{argv[2]}:\n"
            return 0, "", ""
        if argv[0] == "useradd":
            opts = dict(zip(argv[1:-1:2], argv[2:-1:2]))
            login = argv[-1]
            home = argv[argv.index("--home-dir") + 1]
            os.makedirs(home, mode=0o755)
            self.passwd += "{}:x:{}:{}::{}:{}\n".format(login, opts["--uid"], opts["--gid"], home, opts["--shell"])
            return 0, "", ""
        if argv[0] == "userdel":
            self.passwd = "".join(x + "\n" for x in self.passwd.splitlines() if not x.startswith(argv[-1] + ":"))
            self.group = "".join(x + "\n" for x in self.group.splitlines() if not x.startswith(argv[-1] + ":"))
            return 0, "", ""
        if argv[:2] == ["usermod", "--shell"]:
            lines = [x.split(":") for x in self.passwd.splitlines()]
            self.passwd = "".join(":".join(f[:6] + [argv[2]] if f[0] == argv[3] else f) + "\n" for f in lines)
            return 0, "", ""
        if argv[0] in ("groupdel", "usermod", "gpasswd", "setquota"):
            return 0, "", ""
        raise AssertionError("unexpected command " + repr(argv))


@pytest.fixture
def env(tmp_path, monkeypatch, run_module):
    homes, archive, registry = tmp_path / "homes", tmp_path / "archive", tmp_path / "state" / "lab_users.json"
    homes.mkdir()
    host = Host()
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: host(argv, **kw))
    monkeypatch.setattr(os, "chown", lambda *a, **k: None)  # tests do not run as root
    monkeypatch.setattr(lab_users, "home_state", _home_state_as_owner)

    def call(users, check=False, diff=True, **extra):
        """Run the module with ``users`` resolved the way the play resolves them (resolve_lab_users)."""
        resolved = validate_users(users, homes_root=str(homes))
        assert resolved["errors"] == []
        args = {
            "users": resolved["users"],
            "homes_root": str(homes),
            "archive_dir": str(archive),
            "registry": str(registry),
            "quota_backend": "xfs",
            "_ansible_check_mode": check,
            "_ansible_diff": diff,
        }
        args.update(extra)
        host.calls.clear()
        return run_module(lab_users.main, args)

    call.host, call.homes, call.archive, call.registry = host, homes, archive, registry
    return call


_real_home_state = lab_users.home_state


def _home_state_as_owner(path):
    # chown is mocked: report the directory as owned by the uid its name was created for
    state = _real_home_state(path)
    if state.get("exists"):
        state["uid"] = state["gid"] = _OWNERS.get(os.path.basename(path), state["uid"])
    return state


_OWNERS = {"alice": 20000, "bob": 20001}


def changes(calls):
    return [
        c
        for c in calls
        if c[0] not in ("getent",)
        and not (c[0] == "xfs_quota" and "report" in c[3])
        and os.path.basename(c[0]) != "tar"
    ]


def test_add_then_idempotent_then_check_mode(env):
    users = [{"name": "alice", "quota": "15G", "gpu": True}, {"name": "bob", "quota": "1G"}]
    first = env(users)
    assert not first.failed, first.result
    assert first.result["changed"] is True
    assert changes(env.host.calls) == [
        ["groupadd", "--gid", "20000", "lab-alice"],
        [
            "useradd",
            "--uid",
            "20000",
            "--gid",
            "20000",
            "--no-user-group",
            "--home-dir",
            str(env.homes / "alice"),
            "--create-home",
            "--shell",
            "/usr/sbin/nologin",
            "lab-alice",
        ],
        ["xfs_quota", "-x", "-c", "limit -u bsoft=0 bhard=15728640k 20000", str(env.homes)],
        ["groupadd", "--gid", "20001", "lab-bob"],
        [
            "useradd",
            "--uid",
            "20001",
            "--gid",
            "20001",
            "--no-user-group",
            "--home-dir",
            str(env.homes / "bob"),
            "--create-home",
            "--shell",
            "/usr/sbin/nologin",
            "lab-bob",
        ],
        ["xfs_quota", "-x", "-c", "limit -u bsoft=0 bhard=1048576k 20001", str(env.homes)],
    ]
    assert oct((env.homes / "alice").stat().st_mode & 0o777) == "0o700"
    assert json.loads(env.registry.read_text()) == {"uids": {"lab-alice": 20000, "lab-bob": 20001}}
    assert "lab-alice: uid=20000" in first.result["diff"]["after"]
    alice = first.result["users"][0]
    assert (alice["login"], alice["uid"], alice["gid"], alice["gpu"], alice["quota_status"]) == (
        "lab-alice",
        20000,
        20000,
        True,
        "set",
    )

    second = env(users)
    assert second.result["changed"] is False
    assert changes(env.host.calls) == []
    assert "diff" not in second.result

    checked = env(users, check=True)
    assert checked.result["changed"] is False
    assert changes(env.host.calls) == []


def test_check_mode_changes_nothing(env):
    result = env([{"name": "alice"}], check=True)
    assert result.result["changed"] is True
    assert changes(env.host.calls) == []
    assert not (env.homes / "alice").exists()
    assert not env.registry.exists()
    assert result.result["users"][0]["action"] == "add"


def test_quota_change(env):
    env([{"name": "alice", "quota": "15G"}])
    result = env([{"name": "alice", "quota": "20G"}])
    assert result.result["changed"] is True
    assert changes(env.host.calls) == [
        ["xfs_quota", "-x", "-c", "limit -u bsoft=0 bhard=20971520k 20000", str(env.homes)]
    ]


def test_a_record_that_was_not_resolved_fails_before_any_command(env, run_module):
    """The module takes resolved records only: a raw lab_users entry (no login, no home) is refused by its spec."""
    result = run_module(
        lab_users.main,
        {"users": [{"name": "alice", "quota": "1G"}], "homes_root": str(env.homes), "registry": str(env.registry)},
    )
    assert result.failed
    assert "login" in result.result["msg"] and "home" in result.result["msg"]
    assert env.host.calls == []


def test_command_failure_is_reported(env):
    env.host.fail["useradd"] = (9, "", "useradd: username 'lab-alice' already exists")
    result = env([{"name": "alice"}])
    assert result.failed
    assert "useradd" in result.result["msg"] and "already exists" in result.result["msg"]


def test_remove_archives_home_with_checksum_before_removal(env):
    env([{"name": "alice", "quota": "1G"}])
    (env.homes / "alice" / "notebook.ipynb").write_text('{"cells": []}')
    order = []
    real_archive = lab_users.LabUsers.archive

    def spy_archive(self, login, home):
        order.append(("archive", os.path.exists(home)))
        return real_archive(self, login, home)

    lab_users.LabUsers.archive = spy_archive
    try:
        result = env([{"name": "alice", "state": "absent"}])
    finally:
        lab_users.LabUsers.archive = real_archive
    assert not result.failed, result.result
    assert result.result["changed"] is True
    assert order == [("archive", True)]
    assert changes(env.host.calls) == [
        ["xfs_quota", "-x", "-c", "limit -u bsoft=0 bhard=0k 20000", str(env.homes)],
        ["userdel", "lab-alice"],
    ]
    assert not (env.homes / "alice").exists()
    (archive,) = result.result["archives"]
    path = archive["path"]
    assert path.startswith(str(env.archive / "lab-alice-")) and path.endswith(".tar.gz")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert archive["sha256"] == digest
    assert Path(path + ".sha256").read_text() == digest + "  " + os.path.basename(path) + "\n"
    with tarfile.open(path) as tar:
        assert "alice/notebook.ipynb" in tar.getnames()
    assert result.result["users"][0]["archive"]["path"] == path
    # the registry keeps the uid so it is never given to someone else
    assert json.loads(env.registry.read_text())["uids"]["lab-alice"] == 20000
    again = env([{"name": "alice", "state": "absent"}])
    assert again.result["changed"] is False
    assert os.path.exists(path)


def test_no_quota_backend_reports_unavailable(env):
    result = env([{"name": "alice"}], quota_backend="none")
    assert result.result["users"][0]["quota_status"] == "unavailable"
    assert not [c for c in env.host.calls if c[0] in ("xfs_quota", "setquota")]


def test_ext4_uses_setquota(env):
    env.host.fail["repquota"] = (0, "", "")  # nothing set yet
    result = env([{"name": "alice", "quota": "1G"}], quota_backend="ext4")
    assert not result.failed
    assert ["repquota", "-u", "-n", str(env.homes)] in env.host.calls
    assert ["setquota", "-u", "20000", "0", "1048576", "0", "0", str(env.homes)] in env.host.calls


def test_existing_login_shell_is_replaced_by_nologin(env):
    # An account made with a login shell (before metalab refused logins) gets nologin on the next run.
    env.host.passwd += "lab-alice:x:20000:20000::" + str(env.homes / "alice") + ":/bin/bash\n"
    env.host.group += "lab-alice:x:20000:\nlabusers:x:999:lab-alice\n"
    (env.homes / "alice").mkdir(mode=0o700)
    result = env([{"name": "alice", "quota": "1G"}], member_group="labusers")
    assert not result.failed, result.result
    assert ["usermod", "--shell", "/usr/sbin/nologin", "lab-alice"] in env.host.calls
    assert "shell=/usr/sbin/nologin" in result.result["diff"]["after"]
    assert env([{"name": "alice", "quota": "1G"}], member_group="labusers").result["changed"] is False


def test_sparse_file_is_archived_sparse_and_read_back(env):
    env([{"name": "alice", "quota": "1G"}])
    apparent = 2 * 1024**3
    with open(env.homes / "alice" / "disk.img", "wb") as handle:  # 2 GiB apparent, a few bytes of data
        handle.write(b"start")
        handle.seek(apparent - 3)
        handle.write(b"end")
    (env.homes / "alice" / "notes.txt").write_text("kept\n")
    result = env([{"name": "alice", "state": "absent"}])
    assert not result.failed, result.result
    (archive,) = result.result["archives"]
    size = os.path.getsize(archive["path"])
    assert size < 64 * 1024, f"archive of a sparse file is {size} bytes"  # tarfile wrote ~2 MiB of gzip'd zeros
    assert archive["sha256"] == hashlib.sha256(Path(archive["path"]).read_bytes()).hexdigest()
    listed = subprocess.run(["tar", "-tzvf", archive["path"]], capture_output=True, text=True, check=True).stdout
    assert "alice/disk.img" in listed and "alice/notes.txt" in listed
    assert str(apparent) in listed  # the member keeps its apparent size
    assert [c[1:3] for c in env.host.calls if os.path.basename(c[0]) == "tar"] == [
        ["--create", "--gzip"],
        ["--list", "--gzip"],
    ]


def test_unreadable_archive_stops_before_the_home_is_removed(env):
    env([{"name": "alice", "quota": "1G"}])
    real = env.host.__class__.__call__

    def broken_list(self, argv, **kwargs):
        if os.path.basename(argv[0]) == "tar" and argv[1] == "--list":
            return 2, "", "gzip: stdin: unexpected end of file"
        return real(self, argv, **kwargs)

    env.host.__class__.__call__ = broken_list
    try:
        result = env([{"name": "alice", "state": "absent"}])
    finally:
        env.host.__class__.__call__ = real
    assert result.failed
    assert "unexpected end of file" in result.result["msg"]
    assert (env.homes / "alice").is_dir()
    assert ["userdel", "lab-alice"] not in env.host.calls
