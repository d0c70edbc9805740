"""The start and controller figures of benchmarks/run.py and benchmarks/start_bench.py: what the README reports."""

from __future__ import annotations

import os
import subprocess

import pytest


@pytest.fixture(scope="module")
def host(load_bench):
    return load_bench("start_bench")


def test_percentile_is_a_measured_value(run):
    sample = [float(x) for x in range(10, 0, -1)]
    assert run.percentile(sample, 50) == 5.0
    assert run.percentile(sample, 95) == 10.0
    assert run.percentile([2.5], 95) == 2.5
    with pytest.raises(ValueError):
        run.percentile([], 50)


def test_ssh_wrapper_records_each_invocation_and_count_splits_them_by_host(run, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\nexit 0\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    env, log = run.ssh_counting_env(tmp_path, "t")
    wrapper = env["ANSIBLE_SSH_EXECUTABLE"]
    calls = [
        ["-o", "ControlMaster=auto", "10.0.0.2", "/bin/sh -c 'echo 10.0.0.3'\nsecond line"],
        ["-o", "ControlMaster=auto", "10.0.0.2", "true"],
        ["-o", "ControlMaster=auto", "10.0.0.3", "true"],
        ["-O", "exit", "elsewhere"],
    ]
    for argv in calls:
        assert subprocess.run([wrapper, *argv], check=False).returncode == 0
    counts = run.count_ssh(log.read_bytes(), {"h1": "10.0.0.2", "h2": "10.0.0.3", "h3": "10.0.0.4"})
    assert counts == {"h1": 2, "h2": 1, "h3": 0}


def fake_start(seconds, guard_s=0.5, ok=True, user="alice"):
    out = {"user": user, "ok": ok, "guard_s": guard_s}
    if ok:
        out["seconds"] = seconds
    else:
        out["error"] = "podman run failed"
    return out


def test_latency_ratio_of_medians_with_every_run_kept(run):
    data = {
        "bare": [{"ok": True, "seconds": s, "podman_s": 0.3} for s in (1.0, 1.2, 1.1)],
        "metalab": [fake_start(s) for s in (1.5, 1.3, 9.0)],
        "errors": [],
    }
    sec = run.latency_result(data)
    ratio = next(t for t in sec["targets"] if "ratio" in t["what"])
    assert ratio["value"] == pytest.approx(1.5 / 1.1, abs=1e-3)
    assert ratio["verdict"] == "MISS"
    assert sec["runs"]["metalab"][2]["seconds"] == 9.0
    data["metalab"] = [fake_start(s) for s in (1.2, 1.3, 9.0)]
    assert next(t for t in run.latency_result(data)["targets"] if "ratio" in t["what"])["verdict"] == "PASS"


def test_latency_with_an_error_is_no_figure(run):
    with pytest.raises(run.BenchError):
        run.latency_result({"bare": [], "metalab": [fake_start(1.0)], "errors": ["bare: podman run failed"]})


def test_concurrent_counts_failed_starts(run):
    good = {"rounds": [[fake_start(float(i), user=f"u{i}") for i in range(1, 11)]]}
    sec = run.concurrent_result(good, 0.4)
    assert sec["cases"][0]["p50_s"] == 5.0 and sec["cases"][0]["p95_s"] == 10.0
    assert sec["targets"][0]["verdict"] == "PASS" and not sec["failures"]
    bad = {"rounds": [[fake_start(1.0, user="u1"), fake_start(0, ok=False, user="u2")]]}
    sec = run.concurrent_result(bad, None)
    assert sec["targets"][0]["verdict"] == "MISS"
    assert sec["failures"] == [{"user": "u2", "error": "podman run failed"}]


def test_bare_start_is_jupyterlab_itself_with_the_token_only_in_the_env_file(host):
    argv = host.bare_argv("podman", "img", "bare", 1001, 1001, "/home/alice", "/run/b/alice", "/run/b/alice.env")
    assert argv[-2:] == ["img", "/opt/metalab/bin/start-jupyterlab"]
    assert "supervisord" not in " ".join(argv)
    assert argv[argv.index("--env-file") : argv.index("--env-file") + 2] == ["--env-file", "/run/b/alice.env"]
    assert "--network=none" in argv and "--user" in argv


def test_status_url_under_base_url(host):
    assert host.status_url("/user/alice/") == "/user/alice/api/status"
    assert host.status_url("/") == "/api/status"


def test_profile_summary_sums_a_step_that_ran_twice_and_orders_the_phases(run):
    def one(podman, total):
        return {
            "ok": True,
            "steps": [
                ["lock", 0.05, 0.001],
                ["history", 0.06, 0.01],
                ["podman run -d", 0.1, podman],
                ["history", 0.3, 0.01],
                ["exit", 0.31, 0.0],
            ],  # fmt: skip
            "guard_returned_s": 0.35,
            "socket_appeared_s": 2.0,
            "socket_200_s": 2.01,
            "frontdoor_200_s": total,
        }

    steps = run.profile_summary([one(0.1, 2.05), one(0.2, 2.07), one(0.3, 2.5), {"ok": False, "error": "x"}])
    assert [s["step"] for s in steps[:3]] == ["guard: lock", "guard: history", "guard: podman run -d"]
    by_name = {s["step"]: s["median_s"] for s in steps}
    assert by_name["guard: history"] == 0.02
    assert by_name["guard: podman run -d"] == 0.2
    assert by_name["total: start -> 200 through nginx"] == 2.07
    assert by_name["socket 200 -> 200 through nginx (TLS, proxy)"] == pytest.approx(0.06)
    with pytest.raises(run.BenchError):
        run.profile_summary([{"ok": False, "error": "podman run failed"}])
