"""Home usage: the walk (sparse files, hard links, symlinks, unreadable entries, time bound), the quota reports, the
usage file written by `metalab-guard home-usage --write`, and the metrics textfile that reads it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from metalab.host.guard import homeusage
from metalab.host.guard.config import ConfigError, parse_config

from .conftest import T0

FIXTURES = Path(__file__).resolve().parents[1] / "storage" / "fixtures"
MiB = 1024 * 1024


def _blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_walk_counts_blocks_on_disk_not_apparent_size(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "data.bin").write_bytes(os.urandom(2 * MiB))
    sparse = home / "sparse.img"
    with open(sparse, "wb") as fh:
        fh.truncate(512 * MiB)  # 512 MiB apparent size, a few KiB on disk
        fh.seek(100 * MiB)
        fh.write(b"x" * 4096)
    result = homeusage.walk(str(home))
    assert sparse.stat().st_size == 512 * MiB
    assert 2 * MiB <= result.used_bytes < 3 * MiB
    assert result.used_bytes == _blocks(home) + _blocks(home / "data.bin") + _blocks(sparse)
    assert result.files == 2 and not result.partial


def test_walk_counts_hard_links_once_and_never_follows_symlinks(tmp_path):
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 * MiB))
    (home / "sub" / "one").write_bytes(os.urandom(MiB))
    os.link(home / "sub" / "one", home / "two")  # the same 1 MiB under two names
    (home / "to-big").symlink_to(outside / "big")
    (home / "to-dir").symlink_to(outside)
    result = homeusage.walk(str(home))
    assert MiB <= result.used_bytes < 2 * MiB
    expected = _blocks(home) + _blocks(home / "sub") + _blocks(home / "sub" / "one")
    expected += _blocks(home / "to-big") + _blocks(home / "to-dir")  # the links themselves (usually 0 blocks)
    assert result.used_bytes == expected


def test_walk_reads_what_she_locked_away_as_root(tmp_path):
    home = tmp_path / "home"
    (home / "private").mkdir(parents=True)
    (home / "private" / "secret").write_bytes(os.urandom(MiB))
    os.chmod(home / "private" / "secret", 0)
    os.chmod(home / "private", 0)
    try:
        result = homeusage.walk(str(home))
    finally:
        os.chmod(home / "private", 0o700)
    if os.geteuid() == 0:  # the timer runs as root: nothing she hides is left out
        assert result.used_bytes >= MiB and not result.partial
    else:  # elsewhere the walk says it could not see everything
        assert result.used_bytes < MiB and result.partial


def test_walk_gives_up_after_its_time_and_says_so(tmp_path):
    home = tmp_path / "home"
    for i in range(5):
        (home / f"d{i}").mkdir(parents=True)
        (home / f"d{i}" / "f").write_bytes(b"x" * 10000)
    ticks = iter(range(100))
    result = homeusage.walk(str(home), budget_seconds=2.5, clock=lambda: float(next(ticks)))
    assert result.partial
    assert 0 < result.files < 10
    full = homeusage.walk(str(home))
    assert full.files == 10 and not full.partial and full.used_bytes > result.used_bytes


def test_walk_of_a_missing_home_is_zero(tmp_path):
    assert homeusage.walk(str(tmp_path / "nope")).used_bytes == 0


def test_quota_reports_of_xfs_and_quota_tools():
    xfs = homeusage.parse_xfs_quota_report((FIXTURES / "xfs_quota_report.txt").read_text())
    assert xfs == {0: 0, 20000: 1052, 20001: 15728640, 20002: 0}
    rep = homeusage.parse_repquota((FIXTURES / "repquota.txt").read_text())
    assert rep == {0: 20, 20000: 1052, 20001: 16000}  # the grace column of an over-soft user does not shift "used"


def _config(tmp_path, backend="none", **extra):
    homes = tmp_path / "homes"
    users = {}
    for i, name in enumerate(("alice", "bob")):
        (homes / name).mkdir(parents=True, exist_ok=True)
        users[name] = {"uid": 20000 + i, "gid": 20000 + i, "home": str(homes / name), "quota_bytes": (i + 1) * 2**30}
    usage = {"file": str(tmp_path / "usage.json"), "quota_backend": backend, "homes_mount": str(homes)}
    usage.update(extra)
    return parse_config({"host": "lab1", "users": users, "usage": usage, "ledger": str(tmp_path / "l.sqlite")})


def test_measure_from_the_xfs_quota_report(tmp_path):
    calls = []

    def runner(argv):
        calls.append(list(argv))
        return (FIXTURES / "xfs_quota_report.txt").read_text()

    data = homeusage.measure(_config(tmp_path, "xfs"), T0, runner)
    assert calls == [["xfs_quota", "-x", "-c", "report -u -b -n -N", str(tmp_path / "homes")]]
    assert data["alice"] == {
        "used_bytes": 1052 * 1024, "limit_bytes": 2**30, "measured_at": "2023-11-14T22:13:20Z", "source": "quota",
    }  # fmt: skip
    assert data["bob"]["used_bytes"] == 15728640 * 1024 and data["bob"]["limit_bytes"] == 2**31


def test_measure_from_repquota_and_walk_when_the_report_fails(tmp_path):
    data = homeusage.measure(_config(tmp_path, "ext4"), T0, lambda argv: (FIXTURES / "repquota.txt").read_text())
    assert data["alice"]["source"] == "quota" and data["alice"]["used_bytes"] == 1052 * 1024

    def broken(argv):
        raise OSError("repquota: not found")

    (tmp_path / "homes" / "alice" / "f").write_bytes(os.urandom(MiB))
    data = homeusage.measure(_config(tmp_path, "ext4"), T0, broken)
    assert data["alice"]["source"] == "walk" and data["alice"]["used_bytes"] >= MiB


def test_config_refuses_bad_usage_settings(tmp_path):
    with pytest.raises(ConfigError, match="usage.quota_backend"):
        _config(tmp_path / "a", "zfs")
    with pytest.raises(ConfigError, match="usage.walk_seconds"):
        _config(tmp_path / "b", walk_seconds=0)
    with pytest.raises(ConfigError, match=r"users.alice.quota_bytes"):
        parse_config({"users": {"alice": {"uid": 20000, "gid": 20000, "home": "/h", "quota_bytes": "1G"}}})


def test_home_usage_write_then_metrics(env):
    env.data["users"]["alice"]["quota_bytes"] = 2**30
    env.data["usage"] = {"file": str(env.tmp / "state" / "usage.json"), "quota_backend": "none"}
    env.write()
    home = Path(env.data["users"]["alice"]["home"])
    (home / "notebook.ipynb").write_bytes(os.urandom(3 * MiB))
    proc = env.cli("home-usage", "--write", now=T0)
    assert proc.returncode == 0, proc.stderr
    path = env.tmp / "state" / "usage.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"alice", "bob", "carol", "dave"}
    assert data["alice"]["source"] == "walk" and data["alice"]["limit_bytes"] == 2**30
    assert 3 * MiB <= data["alice"]["used_bytes"] < 4 * MiB
    assert data["bob"]["limit_bytes"] == 0 and data["alice"]["measured_at"] == "2023-11-14T22:13:20Z"

    table = env.cli("home-usage", now=T0)
    assert table.returncode == 0 and "alice" in table.stdout and "1G" in table.stdout and "walk" in table.stdout

    proc = env.cli("metrics", now=T0)  # no --quota-file: the usage file of the config
    assert proc.returncode == 0, proc.stderr
    text = (env.tmp / "metalab.prom").read_text()
    assert f'metalab_home_used_bytes{{host="lab1",user="alice"}} {data["alice"]["used_bytes"]}' in text
    assert 'metalab_home_quota_bytes{host="lab1",user="alice"} 1073741824' in text


def test_metrics_without_a_usage_file_has_no_home_series(env):
    env.data["usage"] = {"file": str(env.tmp / "missing.json")}
    env.write()
    proc = env.cli("metrics", now=T0)
    assert proc.returncode == 0, proc.stderr
    text = (env.tmp / "metalab.prom").read_text()
    assert "metalab_runtimes_running" in text and "metalab_home_used_bytes" not in text


MOUNTS = """/dev/vda1 / ext4 rw,relatime 0 0
/dev/nvme0n1 /srv/metalab/homes xfs rw,relatime,attr2,inode64,logbufs=8,logbsize=32k,usrquota,prjquota 0 0
/dev/nvme1n1 /srv/ext ext4 rw,relatime,quota,usrquota 0 0
/dev/nvme2n1 /srv/plain xfs rw,relatime 0 0
"""


def test_auto_backend_follows_the_mount_of_the_homes():
    assert homeusage.detect_backend("/srv/metalab/homes", MOUNTS) == "xfs"
    assert homeusage.detect_backend("/srv/ext/homes", MOUNTS) == "ext4"
    assert homeusage.detect_backend("/srv/plain", MOUNTS) == "none"
    assert homeusage.detect_backend("/srv/metalab/homesick", MOUNTS) == "none"  # on /, not on the homes volume


def test_auto_backend_walks_on_the_root_filesystem(tmp_path):
    def runner(argv):
        raise AssertionError(f"no quota report on a volume without quotas: {argv}")

    (tmp_path / "homes" / "alice").mkdir(parents=True)
    (tmp_path / "homes" / "alice" / "f").write_bytes(os.urandom(MiB))
    data = homeusage.measure(_config(tmp_path, "auto"), T0, runner, mounts=lambda: MOUNTS)
    assert data["alice"]["source"] == "walk" and data["alice"]["used_bytes"] >= MiB
    config = _config(tmp_path, "auto", homes_mount="/srv/metalab/homes")
    xfs = (FIXTURES / "xfs_quota_report.txt").read_text()
    data = homeusage.measure(config, T0, lambda argv: xfs, mounts=lambda: MOUNTS)
    assert data["alice"]["source"] == "quota" and data["alice"]["used_bytes"] == 1052 * 1024
