from __future__ import annotations

import json
from typing import List, Sequence

import pytest

from metalab.host.guard.config import ConfigError, parse_config
from metalab.host.guard.engine import TERMINAL_SCRIPT, ContainerSpec, EngineError, PodmanEngine, Result, parse_ps

from .conftest import base_config


class Recorder:
    """A fake runner: records argv, answers with canned results."""

    def __init__(self, results: Sequence[Result] = ()) -> None:
        self.calls: List[List[str]] = []
        self.results = list(results)

    def __call__(self, argv: Sequence[str], timeout: float) -> Result:
        self.calls.append(list(argv))
        return self.results.pop(0) if self.results else Result(0, "abc123\n", "")


def spec(kind: str = "cpu", gpu=None) -> ContainerSpec:  # type: ignore[no-untyped-def]
    return ContainerSpec(
        name="metalab-alice",
        user="alice",
        uid=2001,
        gid=2001,
        home="/lab/home/alice",
        sockdir="/run/metalab/sockets/alice",
        kind=kind,
        gpu=gpu,
        session=7,
        env_file="/run/metalab/env/alice.env",
    )


def engine(tmp_path, **runtime) -> PodmanEngine:  # type: ignore[no-untyped-def]
    data = base_config(tmp_path)
    data["runtime"].update(engine="podman", **runtime)
    return PodmanEngine(parse_config(data).runtime, runner=Recorder())


def test_run_argv_cpu(tmp_path):
    argv = engine(tmp_path).run_argv(spec())
    assert argv[:2] == ["run", "-d"]
    assert argv[argv.index("--name") + 1] == "metalab-alice"
    assert argv[argv.index("--user") + 1] == "2001:2001"
    assert argv[argv.index("--hostname") + 1] == "studio-lab"
    assert "--network=slirp4netns" in argv
    assert "--cap-drop=ALL" in argv
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert not any(a.startswith("--userns") for a in argv)
    assert {"--cpus=4", "--memory=16g", "--pids-limit=4096"} <= set(argv)
    labels = [argv[i + 1] for i, a in enumerate(argv) if a == "--label"]
    assert labels == ["metalab.user=alice", "metalab.kind=cpu", "metalab.gpu=", "metalab.session=7"]
    assert "/lab/home/alice:/home/studio-lab-user" in argv
    assert "/run/metalab/sockets/alice:/run/lab" in argv
    assert argv[argv.index("--env-file") + 1] == "/run/metalab/env/alice.env"
    assert not any(a in ("-e", "--env") or a.startswith("--env=") for a in argv)
    assert "--device" not in argv
    image = argv.index("localhost/metalab-runtime:test")
    assert argv[image + 1 :] == ["supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]


def test_run_argv_gpu_gets_exactly_its_cdi_device(tmp_path):
    argv = engine(tmp_path).run_argv(spec("gpu", 1))
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--device"] == ["nvidia.com/gpu=1"]
    assert "metalab.gpu=1" in argv
    assert "--cpus=8" in argv and not any(a.startswith("--pids-limit") for a in argv)


def test_gpu_runtime_joins_the_device_group_and_a_cpu_runtime_does_not(tmp_path):
    """Where a GPU node keeps the host's root:<device group> 0660 inside the runtime, she opens it through that
    group, added to her own uid and primary group; a CPU runtime never gets it."""
    eng = engine(tmp_path, gpu_groups=[990])
    gpu = eng.run_argv(spec("gpu", 0))
    assert [gpu[i + 1] for i, a in enumerate(gpu) if a == "--group-add"] == ["990"]
    assert gpu[gpu.index("--user") + 1] == "2001:2001"
    assert gpu.index("--group-add") < gpu.index("localhost/metalab-runtime:test")
    assert "--group-add" not in eng.run_argv(spec())


def test_gpu_runtime_without_a_device_group_adds_none(tmp_path):
    assert "--group-add" not in engine(tmp_path).run_argv(spec("gpu", 0))


def test_resource_limits_off_and_extra_args_for_a_sandbox(tmp_path):
    extra = ["--cgroups=disabled", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    argv = engine(tmp_path, resource_limits=False, extra_args=extra, network="none").run_argv(spec())
    assert not any(a.startswith(("--cpus", "--memory", "--pids-limit")) for a in argv)
    image = argv.index("localhost/metalab-runtime:test")
    assert argv[image - len(extra) - 8 : image - 8] == extra
    assert "--network=none" in argv


@pytest.mark.parametrize("network", ["host", "host:x"])
def test_host_network_is_refused(tmp_path, network):
    data = base_config(tmp_path)
    data["runtime"]["network"] = network
    with pytest.raises(ConfigError, match="not allowed"):
        parse_config(data)


@pytest.mark.parametrize(
    "arg", ["--privileged", "--network=host", "--cap-add=SYS_ADMIN", "--userns=keep-id", "--group-add=0"]
)
def test_extra_args_cannot_weaken_isolation(tmp_path, arg):
    data = base_config(tmp_path)
    data["runtime"]["extra_args"] = [arg]
    with pytest.raises(ConfigError, match="weaken"):
        parse_config(data)


def test_stop_is_graceful_then_removes(tmp_path):
    e = engine(tmp_path, grace_seconds=20)
    e.stop("metalab-alice")
    assert e.runner.calls == [  # type: ignore[attr-defined]
        ["podman", "stop", "--ignore", "--time", "20", "metalab-alice"],
        ["podman", "rm", "-f", "--ignore", "metalab-alice"],
    ]


def test_stop_of_a_missing_container_is_fine_other_errors_raise(tmp_path):
    e = engine(tmp_path)
    e.runner = Recorder([Result(125, "", "Error: no such container metalab-alice"), Result(0, "", "")])
    e.stop("metalab-alice")
    e.runner = Recorder([Result(125, "", "Error: OCI runtime error")])
    with pytest.raises(EngineError, match="OCI runtime error"):
        e.stop("metalab-alice")


def test_start_failure_raises_with_stderr(tmp_path):
    e = engine(tmp_path)
    e.runner = Recorder([Result(125, "", "Error: image not known")])
    with pytest.raises(EngineError, match="image not known"):
        e.start(spec())


def test_notify_passes_the_message_as_an_argument(tmp_path):
    e = engine(tmp_path)
    msg = 'stops in 5m; $(rm -rf ~) "quoted"'
    assert e.notify("metalab-alice", 2001, 2001, msg)
    assert e.runner.calls[-1] == [  # type: ignore[attr-defined]
        "podman", "exec", "--user", "2001:2001", "metalab-alice", "sh", "-c", TERMINAL_SCRIPT, msg,
    ]  # fmt: skip
    assert msg not in TERMINAL_SCRIPT and '"$0"' in TERMINAL_SCRIPT


def test_list_uses_the_label_filter_and_parses(tmp_path):
    e = engine(tmp_path)
    out = [
        {"Names": ["metalab-alice"], "State": "running", "Labels": {"metalab.user": "alice", "metalab.session": "3"}},
        {"Names": ["metalab-bob"], "State": "exited", "Labels": {"metalab.user": "bob", "metalab.session": "x"}},
    ]
    e.runner = Recorder([Result(0, json.dumps(out), "")])
    found = e.list()
    assert e.runner.calls[0] == ["podman", "ps", "-a", "--filter", "label=metalab.user", "--format", "json"]
    assert found["metalab-alice"].running and found["metalab-alice"].session == 3
    assert not found["metalab-bob"].running and found["metalab-bob"].session is None


def test_parse_ps_empty_and_garbage():
    assert parse_ps("") == {}
    assert parse_ps("[]") == {}
    with pytest.raises(EngineError):
        parse_ps("Error: something")
