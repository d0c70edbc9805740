"""benchmarks/run.py times no-change reruns: a rerun that changed anything is refused, never reported as a figure."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(run):
    return run


def fake_playbook(bench, changed):
    def run(inventories, cfg, log, **kwargs):
        recap = {"h1": {"ok": 10, "changed": 0, "unreachable": 0, "failed": 0},
                 "h2": {"ok": 10, "changed": changed, "unreachable": 0, "failed": 0}}  # fmt: skip
        return bench.Run(seconds=1.0, rc=0, recap=recap, log=log)

    return run


@pytest.mark.parametrize("changed", [0, 2])
def test_a_rerun_that_changed_something_is_no_figure(bench, monkeypatch, tmp_path, changed):
    monkeypatch.setattr(bench, "playbook", fake_playbook(bench, changed))
    case = bench.Case(label="rerun", limit=None, cfg=tmp_path / "ansible.cfg", hosts=2)
    fleet = bench.Fleet(names=["h1", "h2"], workdir=tmp_path)
    if changed:
        with pytest.raises(bench.BenchError, match=r"changed something \(\{'h2': 2\}\)"):
            bench.measure(fleet, [tmp_path / "inv.yml"], [case], repeat=1)
        assert case.times == []
    else:
        bench.measure(fleet, [tmp_path / "inv.yml"], [case], repeat=1)
        assert case.times == [1.0] and case.changed == [0]
