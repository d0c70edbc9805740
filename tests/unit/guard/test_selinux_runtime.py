"""SELinux hosts (guard.json runtime.selinux, rendered only where lab_selinux_enabled): each user's runtimes at one
MCS level of her own, the socket tmpfs labelled container_file_t. Everywhere else nothing changes."""

from __future__ import annotations

import itertools

import pytest

from metalab.host.guard import files
from metalab.host.guard.config import ConfigError, parse_config
from metalab.host.guard.engine import PodmanEngine

from .conftest import base_config
from .test_engine import engine, spec


def security_opts(argv):  # type: ignore[no-untyped-def]
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--security-opt"]


def test_without_selinux_the_argv_has_no_label(tmp_path):
    assert security_opts(engine(tmp_path).run_argv(spec())) == ["no-new-privileges"]
    assert parse_config(base_config(tmp_path / "config")).runtime.selinux is False


def test_with_selinux_her_runtime_has_her_level_at_every_start(tmp_path):
    eng = engine(tmp_path, selinux=True)
    level = PodmanEngine.selinux_level(2001)
    assert security_opts(eng.run_argv(spec())) == ["no-new-privileges", f"label=level:{level}"]
    assert security_opts(eng.run_argv(spec("gpu", 0))) == ["no-new-privileges", f"label=level:{level}"]


def test_levels_are_pairs_of_categories_distinct_per_account():
    assert PodmanEngine.selinux_level(1000) == "s0:c0,c1"
    assert PodmanEngine.selinux_level(1001) == "s0:c0,c2"
    assert PodmanEngine.selinux_level(1000 + 1022) == "s0:c0,c1023"
    assert PodmanEngine.selinux_level(1000 + 1023) == "s0:c1,c2"
    pairs = 1024 * 1023 // 2
    assert PodmanEngine.selinux_level(1000 + pairs - 1) == "s0:c1022,c1023"
    levels = [PodmanEngine.selinux_level(uid) for uid in itertools.chain(range(1000, 4000), range(60000, 61000))]
    assert len(set(levels)) == len(levels)


def test_selinux_must_be_a_boolean(tmp_path):
    data = base_config(tmp_path)
    data["runtime"]["selinux"] = "yes"
    with pytest.raises(ConfigError, match="runtime.selinux: expected true or false"):
        parse_config(data)


@pytest.mark.parametrize(
    ("selinux", "options"),
    [
        (False, "size=1m,nr_inodes=64,mode=0750,uid=2001,gid=33,nosuid,nodev,noexec"),
        (True, "size=1m,nr_inodes=64,mode=0750,uid=2001,gid=33,nosuid,nodev,noexec,"
               "context=system_u:object_r:container_file_t:s0"),
    ],
)  # fmt: skip
def test_socket_tmpfs_is_labelled_only_with_selinux(selinux, options):
    assert files.socket_tmpfs_options(2001, 33, "1m", selinux) == options
