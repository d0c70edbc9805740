"""labctl session/usage: pure parts (event collection, rows) and the lab_session module against a fake guard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metalab.labctl import runner, session


def _event(kind: str, host: str, res: dict, task: str = session.TASK) -> dict:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_collect_keeps_the_module_result_per_host_and_flags_refusals() -> None:
    events = [
        {"event": "playbook_on_start"},
        _event("runner_on_ok", "h1", {"sessions": []}),
        _event("runner_on_failed", "h2", {"msg": "unknown user 'x'", "refused": True}),
        _event("runner_on_unreachable", "h3", {"msg": "ssh: no route"}),
        _event("runner_on_ok", "h4", {"msg": "not the module's task"}, task="Something else"),
    ]
    results = session.collect(runner.replay(events, runner.ProgressModel(watch=frozenset({session.TASK}))))
    assert sorted(results) == ["h1", "h2", "h3"]
    assert results["h1"].ok and not results["h2"].ok
    assert results["h2"].refused and results["h2"].message == "unknown user 'x'"
    assert results["h3"].unreachable and not results["h3"].refused and results["h3"].message == "ssh: no route"


def test_usage_rows_sum_hosts_per_user_and_kind() -> None:
    rows = session.usage_rows(
        {
            "a": session.HostResult(
                "a", True, {"usage": {"usage": [{"user": "al", "kind": "cpu", "seconds": 3600, "sessions": 1}]}}
            ),
            "b": session.HostResult(
                "b", True, {"usage": {"usage": [{"user": "al", "kind": "cpu", "seconds": 1800, "sessions": 2}]}}
            ),
            "c": session.HostResult("c", False, {"msg": "boom"}),
        }
    )
    assert rows == [{"user": "al", "kind": "cpu", "seconds": 5400, "sessions": 3, "hosts": "a,b", "hours": "1.50"}]


def test_session_rows_format_time_left() -> None:
    rows = session.session_rows(
        {"h": session.HostResult("h", True, {"sessions": [{"user": "al", "kind": "cpu", "time_left_seconds": 3900}]})}
    )
    assert rows[0]["time_left"] == "1h05m" and rows[0]["host"] == "h" and rows[0]["budget_left"] is None
    assert rows[0]["idle_stop"] is None


def test_session_rows_show_the_idle_stop() -> None:
    sessions = [{"user": "al", "kind": "gpu", "idle_stop_at": "2024-05-01T17:05:00Z", "idle_timeout_seconds": 3600}]
    rows = session.session_rows({"h": session.HostResult("h", True, {"sessions": sessions})})
    assert (rows[0]["idle_stop"], rows[0]["idle_stop_at"]) == ("17:05 UTC", "2024-05-01T17:05:00Z")


# --- the module, with a fake metalab-guard ------------------------------------------------------------------------

FAKE_GUARD = """#!{python}
import json, sys
state = json.load(open({state!r}))
args = [a for a in sys.argv[1:]]
cmd = args[0]
def save():
    json.dump(state, open({state!r}, "w"))
if cmd == "list":
    print(json.dumps(state["sessions"]))
elif cmd == "start":
    user = args[1]
    if user not in state["users"]:
        sys.stderr.write("metalab-guard: unknown user %r: not a lab user on h\\n" % user); sys.exit(2)
    s = {{"user": user, "kind": "gpu" if "--gpu" in args else "cpu", "session": len(state["sessions"]) + 1}}
    state["sessions"].append(s); save(); print(json.dumps(s))
elif cmd == "stop":
    user = args[1]
    before = len(state["sessions"])
    state["sessions"] = [s for s in state["sessions"] if s["user"] != user]; save()
    print(json.dumps({{"user": user, "stopped": before != len(state["sessions"])}}))
"""


@pytest.fixture()
def guard(tmp_path: Path) -> Path:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"users": ["alice", "bob"], "sessions": []}))
    script = tmp_path / "metalab-guard"
    script.write_text(FAKE_GUARD.format(python=sys.executable, state=str(state)))
    script.chmod(0o755)
    return script


def run_module(guard: Path, args: dict, check: bool = False) -> dict:
    import subprocess

    from metalab.labctl import collection

    module = collection.root() / "plugins" / "modules" / "lab_session.py"
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "guard": str(guard), "_ansible_check_mode": check}}
    env = {"PYTHONPATH": str(collection.root() / "collections")}
    proc = subprocess.run(
        [sys.executable, str(module)], input=json.dumps(payload), capture_output=True, text=True, env=env, check=False
    )
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([({"user": "alice"}, False)], [(True, None)]),
        ([({"user": "alice"}, False), ({"user": "alice"}, False)], [(True, None), (False, None)]),
        ([({"user": "alice"}, True)], [(True, None)]),
        ([({"user": "alice"}, False), ({"user": "alice", "gpu": True}, False)], [(True, None), (None, "already has")]),
        ([({"user": "nobody"}, False)], [(None, "unknown user")]),
        ([({"user": "alice"}, False), ({"user": "alice", "state": "stopped"}, False)], [(True, None), (True, None)]),
        ([({"user": "alice", "state": "stopped"}, False)], [(False, None)]),
    ],
)
def test_lab_session_module(guard: Path, steps: list, expected: list) -> None:
    for (args, check), (changed, error) in zip(steps, expected):
        result = run_module(guard, args, check)
        if error:
            assert result.get("failed") and error in result["msg"] and result.get("refused")
        else:
            assert not result.get("failed"), result
            assert result["changed"] is changed
