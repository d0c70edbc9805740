"""The progress model, replayed on event streams recorded from real ansible-runner runs (record_events.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from metalab.labctl import display, runner

EVENTS = Path(__file__).parent / "fixtures" / "events"


def load(name: str) -> list[dict[str, Any]]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def counts(model: runner.ProgressModel, host: str) -> tuple[int, int, int, int, int]:
    h = model.hosts[host]
    return h.ok, h.changed, h.failed, h.unreachable, h.skipped


@pytest.mark.parametrize(
    ("scenario", "expected", "code"),
    [
        ("ok", {"lab-a": ((2, 0, 0, 0, 0), "ok")}, runner.EXIT_OK),
        ("changed", {"lab-a": ((2, 1, 0, 0, 1), "changed")}, runner.EXIT_OK),
        ("failed", {"lab-a": ((3, 1, 0, 0, 1), "changed"), "lab-b": ((2, 1, 1, 0, 0), "failed")}, runner.EXIT_FAILED),
        (
            "unreachable",
            {"lab-a": ((2, 0, 0, 0, 0), "ok"), "lab-gone": ((0, 0, 0, 1, 0), "unreachable")},
            runner.EXIT_UNREACHABLE,
        ),
    ],
)
def test_replayed_stream_gives_summary_and_exit_code(scenario: str, expected: dict[str, Any], code: int) -> None:
    model = runner.replay(load(scenario))
    assert model.finished
    assert set(model.hosts) == set(expected)
    for host, (numbers, status) in expected.items():
        assert counts(model, host) == numbers
        assert model.hosts[host].status == status
    assert model.exit_code() == code


@pytest.mark.parametrize("scenario", ["ok", "changed", "failed", "unreachable"])
def test_live_counts_agree_with_the_recap(scenario: str) -> None:
    """Counts gathered event by event equal what playbook_on_stats says at the end."""
    events = load(scenario)
    live = runner.replay(e for e in events if e["event"] != "playbook_on_stats")
    final = runner.replay(events)
    for host, h in final.hosts.items():
        assert counts(live, host) == counts(final, host)
        assert live.hosts[host].status == h.status


def test_progress_follows_the_current_role_and_task() -> None:
    model = runner.ProgressModel()
    events = load("failed")
    for event in events:
        model.feed(event)
        if event["event"] == "runner_on_start":
            break
    assert model.play == "One failure"
    assert (model.role, model.task) == ("probe", "Read the root directory")
    h = model.hosts["lab-a"]
    assert (h.role, h.task, h.busy) == ("probe", "Read the root directory", True)
    assert h.elapsed(h.first_start + 5) == pytest.approx(5)  # type: ignore[operator]
    runner.replay(events[events.index(event) + 1 :], model)
    assert model.task == "Runs after the failure on the healthy host only"
    assert model.hosts["lab-b"].task == "Fail on purpose"  # where the failed host stopped
    assert not model.hosts["lab-a"].busy


def test_errors_and_durations_are_kept() -> None:
    model = runner.replay(load("failed"))
    assert model.hosts["lab-b"].last_error == "Fail on purpose: this task fails on purpose"
    assert model.hosts["lab-a"].duration > 0
    gone = runner.replay(load("unreachable")).hosts["lab-gone"]
    assert "Connection refused" in gone.last_error


def test_no_recap_means_the_run_did_not_complete() -> None:
    events = [e for e in load("ok") if e["event"] != "playbook_on_stats"]
    assert runner.replay(events).exit_code() == runner.EXIT_ERROR
    assert runner.replay([]).exit_code() == runner.EXIT_ERROR


def test_failed_wins_over_unreachable() -> None:
    model = runner.replay(load("failed"))
    model.host("lab-gone").unreachable = 1
    assert model.exit_code() == runner.EXIT_FAILED


def test_ignored_failure_is_not_a_failure() -> None:
    event = {"event": "runner_on_failed", "event_data": {"host": "h", "task": "t", "ignore_errors": True, "res": {}}}
    model = runner.replay([event])
    assert (model.hosts["h"].failed, model.hosts["h"].ignored) == (0, 1)


def test_summary_rows() -> None:
    rows = runner.replay(load("unreachable")).summary()
    assert [(r["host"], r["status"], r["unreachable"]) for r in rows] == [
        ("lab-a", "ok", 0),
        ("lab-gone", "unreachable", 1),
    ]


def test_plain_lines() -> None:
    lines = [line for e in load("failed") if (line := display.plain_line(e)) is not None]
    assert lines[0] == "PLAY One failure"
    assert "TASK probe : Read the root directory" in lines
    assert "  changed: lab-a" in lines
    assert "  failed: lab-b - this task fails on purpose" in lines
    summary = display.summary_lines(runner.replay(load("failed")))
    assert summary[0] == "SUMMARY"
    assert summary[2].startswith("  lab-b status=failed ok=2 changed=1 failed=1 unreachable=0 skipped=0")


def test_tables_render() -> None:
    model = runner.replay(load("unreachable"))
    console = Console(file=io.StringIO(), width=120)
    console.print(display.progress_table(model, now=0))
    console.print(display.summary_table(model))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "lab-gone" in text and "unreachable" in text and "Summary" in text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.6, "1m00s"), (61, "1m01s"), (3725, "1h02m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert display.format_duration(seconds) == text


def test_unknown_playbook_is_refused() -> None:
    with pytest.raises(FileNotFoundError, match="no playbook 'nope'"):
        runner.playbook_path("nope")
    with pytest.raises(FileNotFoundError):
        runner.playbook_path("../ansible.cfg")
    assert runner.playbook_path("doctor.yml").name == "doctor.yml"


def test_each_run_gets_a_fresh_private_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ansible-runner reads env/cmdline from its private data dir: a shared one made every run after --check a check.

    Reality showed it: `labctl provision --check`, then `labctl provision` ran with --check --diff again.
    """
    import sys
    import types

    calls: list[dict[str, Any]] = []

    def fake_run(**kwargs: Any) -> Any:
        private = Path(kwargs["private_data_dir"])
        calls.append({**kwargs, "env_files": sorted(p.name for p in (private / "env").glob("*"))})
        # What ansible-runner does without suppress_env_files: leave the cmdline behind for the next run.
        (private / "env").mkdir(exist_ok=True)
        (private / "env" / "cmdline").write_text(kwargs.get("cmdline") or "")
        return types.SimpleNamespace(status="successful", rc=0)

    monkeypatch.setitem(sys.modules, "ansible_runner", types.SimpleNamespace(run=fake_run))
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    stale = tmp_path / "cache" / "runner" / "env"  # what older labctl versions left behind
    stale.mkdir(parents=True)
    (stale / "cmdline").write_text("--check --diff")

    first = runner.run_playbook("site", check=True, skip_tags="runtimes")
    second = runner.run_playbook("site", tags="lab_users")
    one, two = calls
    assert one["cmdline"] == "--check --diff" and two["cmdline"] is None
    assert (one["skip_tags"], two["tags"]) == ("runtimes", "lab_users")
    assert one["suppress_env_files"] and two["env_files"] == []
    assert one["private_data_dir"] != two["private_data_dir"]
    assert not Path(two["private_data_dir"]).exists(), "the private data dir is removed after the run"
    assert Path(one["artifact_dir"]) == tmp_path / "cache" / "runner" / "artifacts"
    assert first.artifacts.parent == second.artifacts.parent == tmp_path / "cache" / "runner" / "artifacts"


def test_facts_are_cached_across_runs_not_per_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ansible-runner points the fact cache at each run's artifacts unless told otherwise: every provision then
    gathered facts again. The real RunnerConfig, given labctl's arguments, must keep labctl's cache directory."""
    import sys
    import types

    from ansible_runner.config.runner import RunnerConfig

    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(
        sys.modules,
        "ansible_runner",
        types.SimpleNamespace(run=lambda **kw: calls.append(kw) or types.SimpleNamespace(status="successful", rc=0)),
    )
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    runner.run_playbook("site")
    (kwargs,) = calls
    private = tmp_path / "private"
    private.mkdir()
    config = RunnerConfig(
        private_data_dir=str(private),
        artifact_dir=kwargs["artifact_dir"],
        playbook=kwargs["playbook"],
        envvars=kwargs["envvars"],
        fact_cache_type=kwargs["fact_cache_type"],
        ident=kwargs["ident"],
        suppress_env_files=True,
    )
    config.prepare()
    assert config.env["ANSIBLE_CACHE_PLUGIN"] == "jsonfile"
    assert config.env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "cache" / "facts")


def test_watched_tasks_keep_each_hosts_result_and_failures_their_full_message() -> None:
    """What session, users passwd/enroll and doctor read: the result of a task by name, per host."""
    model = runner.replay(load("failed"), runner.ProgressModel(watch=frozenset({"Fail on purpose"})))
    watched = model.results["Fail on purpose"]
    assert watched["lab-b"].outcome == "failed" and watched["lab-b"].res["msg"] == "this task fails on purpose"
    assert watched["lab-a"].outcome == "skipped"
    assert "Write a scratch file" not in model.results, "only watched tasks are kept"
    assert model.hosts["lab-b"].message == "this task fails on purpose"
    gone = runner.replay(load("unreachable")).hosts["lab-gone"]
    assert gone.unreachable and "Connection refused" in gone.message and gone.message in gone.last_error


def test_a_run_that_keeps_no_artifacts_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """session token and users passwd runs: their events hold secrets; nothing of them stays on the controller."""
    import sys
    import types

    seen: list[Path] = []

    def fake_run(**kwargs: Any) -> Any:
        artifacts = Path(kwargs["artifact_dir"]) / kwargs["ident"]
        artifacts.mkdir(parents=True)
        (artifacts / "stdout").write_text("token: s3cret")
        seen.append(artifacts)
        return types.SimpleNamespace(status="successful", rc=0)

    monkeypatch.setitem(sys.modules, "ansible_runner", types.SimpleNamespace(run=fake_run))
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    result = runner.run_playbook(
        runner.command_playbook("session"), extravars={"metalab_target": "all"}, keep_artifacts=0
    )
    assert result.artifacts is None and not seen[0].exists()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("name", ["session", "broker"])
def test_command_playbooks_are_files_of_the_collection(name: str) -> None:
    path = runner.command_playbook(name)
    assert path.is_file() and path.parent.name == "labctl"
    with pytest.raises(FileNotFoundError):  # not something `labctl provision --playbook` runs
        runner.playbook_path(f"labctl/{name}")
