"""What keeps a runtime confined and enforcement unstoppable, as far as the guard decides it: the podman arguments it
refuses or adds, and the lock that a user looping start/stop cannot keep from the guard run (docs/security.md)."""

from __future__ import annotations

import threading
import time

import pytest

from metalab.host.guard import files
from metalab.host.guard.config import ConfigError, parse_config
from metalab.host.guard.sessions import Failure

from .conftest import T0, H, base_config
from .test_engine import engine, spec


@pytest.mark.parametrize(
    "extra",
    [
        ["--net", "host"],
        ["--net=host"],
        ["--network", "host"],
        ["--ipc=host"],
        ["--ipc", "host"],
        ["--pid", "host"],
        ["--uts=host"],
        ["--security-opt", "seccomp=unconfined"],
        ["--security-opt=apparmor=unconfined"],
        ["-v", "/:/host"],
        ["--volume=/etc:/etc2"],
        ["--mount", "type=bind,src=/,dst=/host"],
        ["--device", "/dev/sda"],
        ["--device=/dev/nvidia0"],
        ["--privileged"],
        ["--privileged=true"],
        ["--cap-add", "SYS_ADMIN"],
        ["--userns=host"],
        ["--group-add", "0"],
        ["-u", "0"],
        ["--read-only=false"],
        ["--tmpfs", "/home/studio-lab-user"],
        ["--cgroups", "enabled", "--volumes-from", "metalab-bob"],
        ["-dv", "/:/h"],
    ],
)
def test_isolation_weakening_engine_args_are_refused_in_every_spelling(tmp_path, extra):
    data = base_config(tmp_path)
    data["runtime"]["extra_args"] = extra
    with pytest.raises(ConfigError, match="runtime.extra_args"):
        parse_config(data)


def test_the_nested_host_arguments_and_passwd_entry_are_accepted(tmp_path):
    data = base_config(tmp_path)
    extra = ["--cgroups=disabled", "--ulimit=nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--passwd-entry",
             "studio-lab-user:*:$UID:$GID:studio-lab-user:/home/studio-lab-user:/bin/bash"]  # fmt: skip
    data["runtime"]["extra_args"] = extra
    assert parse_config(data).runtime.extra_args == extra


def test_an_allowed_option_without_its_value_is_refused(tmp_path):
    data = base_config(tmp_path)
    data["runtime"]["extra_args"] = ["--ulimit"]
    with pytest.raises(ConfigError, match="needs a value"):
        parse_config(data)


@pytest.mark.parametrize(
    "network",
    [
        "host",
        "ns:/proc/1/ns/net",
        "container:metalab-bob",
        "slirp4netns:allow_host_loopback=true",
        "slirp4netns:outbound_addr=eth0",
        "bridge",
        "podman",
        "metalab",
        "pasta",
        "a b",
    ],
)
def test_networks_that_are_not_the_runtimes_own_are_refused(tmp_path, network):
    data = base_config(tmp_path)
    data["runtime"]["network"] = network
    with pytest.raises(ConfigError, match="not allowed"):
        parse_config(data)


@pytest.mark.parametrize("network", ["slirp4netns", "none", "slirp4netns:enable_ipv6=false,mtu=1500"])
def test_own_namespace_networks_are_accepted(tmp_path, network):
    data = base_config(tmp_path)
    data["runtime"]["network"] = network
    assert parse_config(data).runtime.network == network


def test_user_names_are_matched_in_full(tmp_path):
    data = base_config(tmp_path)
    data["users"]["alice\n"] = data["users"].pop("alice")
    with pytest.raises(ConfigError, match="invalid user name"):
        parse_config(data)


def test_runtime_root_is_read_only_with_bounded_scratch_and_log(tmp_path):
    argv = engine(tmp_path).run_argv(spec())
    assert "--read-only" in argv and "--read-only-tmpfs=false" in argv
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert tmpfs == ["/tmp:rw,nosuid,nodev,size=1g,mode=1777", "/var/tmp:rw,nosuid,nodev,size=256m,mode=1777"]
    assert "--log-opt=max-size=10m" in argv
    image = argv.index("localhost/metalab-runtime:test")
    assert argv.index("--read-only") < image


def test_read_only_can_be_switched_off_only_explicitly(tmp_path):
    argv = engine(tmp_path, read_only=False, tmpfs={}).run_argv(spec())
    assert "--read-only" not in argv and "--tmpfs" not in argv


@pytest.mark.parametrize(("key", "value"), [("tmpfs", {"/home/studio-lab-user": "1g"}), ("tmpfs", {"/tmp": "lots"}),
                                            ("log_max_size", "-1"), ("read_only", "yes")])  # fmt: skip
def test_bad_confinement_settings_are_refused(tmp_path, key, value):
    data = base_config(tmp_path)
    data["runtime"][key] = value
    with pytest.raises(ConfigError, match=f"runtime.{key}"):
        parse_config(data)


def test_socket_tmpfs_mount_options(monkeypatch, tmp_path):
    calls = []

    class Done:
        returncode, stderr = 0, ""

    monkeypatch.setattr(files, "_as_root", lambda: True)
    monkeypatch.setattr(files.os.path, "ismount", lambda path: False)
    monkeypatch.setattr(files.subprocess, "run", lambda argv, **kw: calls.append(argv) or Done())
    files.mount_socket_tmpfs(str(tmp_path / "alice"), 2001, 33, "1m")
    options = "size=1m,nr_inodes=64,mode=0750,uid=2001,gid=33,nosuid,nodev,noexec"
    assert calls == [["mount", "-t", "tmpfs", "-o", options, "metalab-socket", str(tmp_path / "alice")]]
    monkeypatch.setattr(files.os.path, "ismount", lambda path: True)
    files.mount_socket_tmpfs(str(tmp_path / "alice"), 2001, 33, "1m")  # mounted already: nothing
    files.unmount_socket_tmpfs(str(tmp_path), "alice")
    assert calls[1:] == [["umount", str(tmp_path / "alice")]]


def test_the_guard_run_goes_before_a_looping_start_stop(env):
    """A user looping start/stop (each holding the lock for a while) cannot keep a waiting guard run out."""
    env.data["lock_timeout"] = 20
    looper, guard = env.lab(), env.lab()
    looper.start("alice", "cpu", T0)
    order = []
    stop_looping = threading.Event()

    def loop() -> None:
        n = 0
        while not stop_looping.is_set():
            looper._locked()
            try:
                time.sleep(0.3)  # a slow podman run / stop
                order.append(("op", n))
            finally:
                looper.lock.release()
            n += 1

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.5)
        report = guard.run(T0 + 13 * H)
        order.append(("run", None))
    finally:
        stop_looping.set()
        thread.join(timeout=30)
    assert not report.skipped and report.stopped == [("alice", "limit")]
    ops_before = [o for o in order[: order.index(("run", None))] if o[0] == "op"]
    # the run waited for the one operation in progress when it announced itself (and the one before), no more
    assert len(ops_before) <= 3


def test_a_start_waits_while_a_guard_run_is_announced(env, lab):
    env.data["lock_timeout"] = 1
    other = env.lab()
    assert other.gate.acquire(0)  # a guard run waiting for the lock
    try:
        with pytest.raises(Failure, match="enforcing session limits"):
            lab.start("alice", "cpu", T0)
    finally:
        other.gate.release()
    assert lab.start("alice", "cpu", T0)["user"] == "alice"


def test_lock_directory_writable_by_others_is_refused(env, monkeypatch):
    import os

    if os.geteuid() != 0:
        monkeypatch.setattr(os, "geteuid", lambda: 0)
    lock_dir = env.tmp / "run"
    lock_dir.mkdir(mode=0o777, exist_ok=True)
    lock_dir.chmod(0o1777)
    lab = env.lab()
    with pytest.raises(Failure, match="owned by root and writable by root only"):
        lab.run(T0)
