from __future__ import annotations

import csv
import io
import json
import os
import stat

import pytest

from metalab.host.guard import cli

from .conftest import T0, H


def ok(proc):  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_end_to_end(env):
    started = json.loads(ok(env.cli("start", "alice", "--gpu", "--json", now=T0)))
    assert {k: started[k] for k in ("user", "host", "kind", "gpu", "session", "time_left_seconds")} == {
        "user": "alice", "host": "lab1", "kind": "gpu", "gpu": 0, "session": 1, "time_left_seconds": 4 * H,
    }  # fmt: skip
    assert started["started"] == "2023-11-14T22:13:20Z"
    ok(env.cli("start", "bob", now=T0 + 60))

    listing = json.loads(ok(env.cli("list", "--json", now=T0 + H)))
    assert [(s["user"], s["kind"], s["gpu"], s["time_left_seconds"]) for s in listing] == [
        ("alice", "gpu", 0, 3 * H),
        ("bob", "cpu", None, 11 * H + 60),
    ]
    table = ok(env.cli("list", now=T0 + H))
    assert "TIME LEFT" in table and "3h00m" in table

    assert "stops in 4h00m" in ok(env.cli("extend", "alice", "1h", now=T0 + H))

    stopped = json.loads(ok(env.cli("stop", "alice", "--reason", "user", "--json", now=T0 + 2 * H)))
    assert stopped["stopped"] and stopped["reason"] == "user" and stopped["gpu"] == 0
    assert json.loads(ok(env.cli("stop", "alice", "--json", now=T0 + 2 * H)))["stopped"] is False

    usage = json.loads(ok(env.cli("usage", "--json", now=T0 + 3 * H)))
    assert usage["usage"] == [
        {"user": "alice", "kind": "gpu", "seconds": 2 * H, "hours": 2.0, "sessions": 1},
        {"user": "bob", "kind": "cpu", "seconds": 3 * H - 60, "hours": 2.98, "sessions": 1},
    ]
    rows = list(csv.DictReader(io.StringIO(ok(env.cli("usage", "--since", "1h", "--csv", now=T0 + 3 * H)))))
    assert [(r["user"], r["kind"], r["hours"]) for r in rows] == [("bob", "cpu", "1.00")]
    since_iso = json.loads(ok(env.cli("usage", "--since", "2023-11-15T00:13:20Z", "--json", now=T0 + 3 * H)))
    assert [(u["user"], u["seconds"]) for u in since_iso["usage"]] == [("bob", H)]  # alice ended at --since

    report = json.loads(ok(env.cli("run", "--json", now=T0 + 12 * H + 60)))
    assert report["stopped"] == [{"user": "bob", "reason": "limit"}]
    assert json.loads(ok(env.cli("list", "--json", now=T0 + 13 * H))) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("start", "mallory"), 2, "unknown user 'mallory'"),
        (("start", "bob", "--gpu"), 2, "bob may not start GPU runtimes"),
        (("extend", "alice", "1y"), 2, "unknown unit 'y'"),
        (("extend", "alice", "1h"), 2, "alice has no runtime running"),
        (("usage", "--since", "yesterday"), 2, "--since 'yesterday'"),
    ],
)
def test_refusals_exit_2_with_one_line(env, args, code, message):
    proc = env.cli(*args)
    assert proc.returncode == code
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_failures_exit_1(env):
    env.sim.update(fail=["run"])
    proc = env.cli("start", "alice")
    assert proc.returncode == 1 and "simulated run failure" in proc.stderr


def test_config_errors_exit_1_and_name_the_problem(env, tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "missing.json"), "list"]) == 1
    assert "missing.json not found" in capsys.readouterr().err
    env.data["policy"]["limits"]["gpu"] = "4 hours"
    env.write()
    assert cli.main(["--config", str(env.path), "list"]) == 1
    assert "policy limits.gpu: invalid duration '4 hours'" in capsys.readouterr().err


def test_config_from_env_var(env, monkeypatch, capsys):
    monkeypatch.setenv("METALAB_GUARD_CONFIG", str(env.path))
    assert cli.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_token_is_root_only(env, monkeypatch, capsys):
    monkeypatch.setenv("METALAB_GUARD_CONFIG", str(env.path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["token", "alice"]) == 1
    assert "only root" in capsys.readouterr().err
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["token", "alice"]) == 2  # no runtime, no token
    assert "no runtime running" in capsys.readouterr().err
    (env.tmp / "tokens").mkdir(mode=0o700)
    (env.tmp / "tokens" / "alice").write_text("t0ken-of-the-running-runtime\n")
    assert cli.main(["token", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    assert token == (env.tmp / "tokens" / "alice").read_text().strip()
    assert cli.main(["token", "mallory"]) == 2


def test_metrics_textfile(env, tmp_path):
    env.data["users"]["alice"]["budgets"] = {"gpu": "4h"}
    env.write()
    ok(env.cli("start", "alice", "--gpu", now=T0))
    ok(env.cli("start", "bob", now=T0))
    ok(env.cli("stop", "bob", now=T0 + H))
    ok(env.cli("run", now=T0 + 2 * H))
    quota = tmp_path / "quota.json"
    quota.write_text(json.dumps({"alice": {"used_bytes": 1024, "limit_bytes": 16106127360}}))
    ok(env.cli("metrics", "--quota-file", str(quota), now=T0 + 2 * H))
    path = env.tmp / "metalab.prom"
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert 'metalab_runtimes_running{host="lab1",kind="gpu"} 1' in text
    assert 'metalab_runtimes_running{host="lab1",kind="cpu"} 0' in text
    assert 'metalab_runtime_seconds_total{host="lab1",user="alice",kind="gpu"} 7200' in text
    assert 'metalab_runtime_seconds_total{host="lab1",user="bob",kind="cpu"} 3600' in text
    assert 'metalab_budget_seconds{host="lab1",user="alice",kind="gpu"} 14400' in text
    assert 'metalab_home_used_bytes{host="lab1",user="alice"} 1024' in text
    assert 'metalab_home_quota_bytes{host="lab1",user="alice"} 16106127360' in text
    assert 'metalab_gpus_in_use{host="lab1"} 1' in text
    assert "# TYPE metalab_runtime_seconds_total counter" in text
    assert not [p for p in os.listdir(env.tmp) if p.endswith(".tmp")]


def test_boot_cli(env):
    ok(env.cli("start", "alice", now=T0))
    report = json.loads(ok(env.cli("boot", "--json", now=T0 + H)))
    assert report["stopped"] == [{"user": "alice", "reason": "host-restart"}]
