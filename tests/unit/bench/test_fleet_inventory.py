"""The benchmarks' lab inventory over several sandboxes (benchmarks/run.py, Fleet.vars_inventory): one lab whose users
each name their home host, as the lab layout requires (lab_users[].host), so the fleet sections converge."""

from __future__ import annotations

import json
from pathlib import Path

from metalab.rules import validate_layout, validate_users


def test_one_lab_with_every_user_homed_on_one_sandbox(run, tmp_path: Path) -> None:
    fleet = run.Fleet(names=["bm1", "bm2", "bm3"], workdir=tmp_path)
    data = json.loads(fleet.vars_inventory({"bm1": 1, "bm2": 50, "bm3": 200}).read_text())
    users = data["all"]["vars"]["lab_users"]
    assert sorted(data["all"]["hosts"]) == ["bm1", "bm2", "bm3"]
    assert [sum(u["host"] == h for u in users) for h in ("bm1", "bm2", "bm3")] == [1, 50, 200]
    assert users[0] == {"name": "alice", "quota": "1G", "host": "bm1"}
    assert len({u["name"] for u in users}) == 251  # unique in the lab
    resolved = validate_users(users)
    assert resolved["errors"] == []
    assert validate_layout(resolved["users"], ["bm1", "bm2", "bm3"]) == []


def test_without_a_home_host_the_layout_refuses_them(run) -> None:
    """What the fleet sections failed on before: the same users without host, in a lab of several hosts."""
    users = [{k: v for k, v in u.items() if k != "host"} for u in run.users_list(3)]
    errors = validate_layout(validate_users(users)["users"], ["bm1", "bm2"])
    assert len(errors) == 3 and "no home host" in errors[0]
