from __future__ import annotations

import pytest

from metalab.host.guard.policy import (
    Interval,
    Policy,
    budget_available_at,
    budget_end,
    budget_left,
    build_policy,
    deadline,
    due_warnings,
    format_clock,
    format_duration,
    parse_duration,
    start_decision,
    time_left,
    used_in_window,
)

from .conftest import T0, H

M = 60


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12h", 12 * H),
        ("90m", 90 * M),
        ("1h30m", 90 * M),
        ("45s", 45),
        ("1h0m5s", H + 5),
        ("2d", 48 * H),
        ("3600", 3600),
        (3600, 3600),
        (0, 0),
        (" 4H ", 4 * H),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["12x", "1h30", "h", "", "1.5h", "-5m", "5m5m", True, None, -1, [1]])
def test_parse_duration_rejects_and_names_the_value(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_unknown_unit_is_named():
    with pytest.raises(ValueError, match=r"'12w'.*unknown unit 'w'"):
        parse_duration("12w")


def test_format_helpers():
    assert format_duration(4 * H + 5 * M) == "4h05m"
    assert format_duration(12 * M + 30) == "12m30s"
    assert format_duration(45) == "45s"
    assert format_duration(-3) == "0s"
    assert format_clock(T0) == "22:13"


def test_default_limits_and_no_budgets():
    p = build_policy({})
    assert (p.limit("cpu"), p.limit("gpu")) == (12 * H, 4 * H)
    assert p.budget("cpu") is None and p.budget("gpu") is None
    assert p.warnings == (15 * M, 5 * M)


def test_preset_studiolab_2023():
    p = build_policy({"preset": "studiolab-2023"})
    assert (p.limit("cpu"), p.limit("gpu")) == (4 * H, 4 * H)
    assert (p.budget("cpu"), p.budget("gpu")) == (8 * H, 4 * H)


def test_user_override_beats_policy_beats_preset():
    raw = {"preset": "studiolab-2023", "limits": {"cpu": "6h"}}
    assert build_policy(raw).limit("cpu") == 6 * H
    p = build_policy(raw, {"limits": {"cpu": "2h"}, "budgets": {"gpu": None}})
    assert p.limit("cpu") == 2 * H
    assert p.budget("gpu") is None
    assert p.budget("cpu") == 8 * H


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"preset": "nope"}, "unknown preset"),
        ({"limits": {"tpu": "1h"}}, "unknown runtime kind 'tpu'"),
        ({"limits": {"cpu": "1y"}}, r"limits.cpu: invalid duration '1y'"),
        ({"limits": {"cpu": None}}, "a session limit is required"),
        ({"budgets": {"cpu": "2m"}}, "shorter than policy.min_start"),
        ({"warnings": "5m"}, "expected a list"),
    ],
)
def test_bad_policy_is_named(raw, match):
    with pytest.raises(ValueError, match=match):
        build_policy(raw)


def test_used_in_window_clips_to_24h_and_counts_running_up_to_now():
    ivs = [Interval(T0 - 30 * H, T0 - 23 * H), Interval(T0 - 2 * H, T0 - H), Interval(T0 - 10 * M, None)]
    # first: only its last hour is in the window; second: 1h; running: 10m
    assert used_in_window(ivs, T0) == H + H + 10 * M


def test_session_limit_binds_without_budget():
    p = build_policy({})
    assert time_left(p, "gpu", T0, 0, [], T0 + H) == 3 * H
    d = deadline(p, "gpu", T0, 0, [], T0 + H)
    assert d.reason == "limit" and d.budget_at is None


def test_budget_binds_when_earlier_than_the_limit():
    p = build_policy({"preset": "studiolab-2023"})
    # 6h of CPU used earlier today: 2h left, limit 4h -> budget binds
    past = [Interval(T0 - 8 * H, T0 - 2 * H)]
    d = deadline(p, "cpu", T0, 0, past, T0)
    assert d.reason == "budget"
    assert d.stop_at == pytest.approx(T0 + 2 * H)
    assert time_left(p, "cpu", T0, 0, past, T0 + 30 * M) == pytest.approx(90 * M)


def test_budget_end_accounts_for_old_sessions_leaving_the_window():
    # budget 4h; 3h used from T0-23h to T0-20h. A session starting at T0: as it runs, the old session leaves
    # the window from T0+1h on (1:1), so the budget never runs out before the old usage is gone: at t=T0+x,
    # used = x + max(0, 3h - max(0, x - 1h)) -> reaches 4h at x = 4h? used(1h)=1h+3h=4h -> T0+1h.
    past = [Interval(T0 - 23 * H, T0 - 20 * H)]
    assert budget_end(past, T0, 4 * H, T0) == pytest.approx(T0 + H)
    # with 2h used 23h..21h ago: used(x) = x + 2h - max(0, x-1h) for x <= 3h: x=1h -> 3h; x>1h: 3h constant
    # until x=3h, then x alone: reaches 4h at x = 4h.
    past = [Interval(T0 - 23 * H, T0 - 21 * H)]
    assert budget_end(past, T0, 4 * H, T0) == pytest.approx(T0 + 4 * H)


def test_budget_longer_than_the_window_never_ends():
    assert budget_end([], T0, 25 * H, T0) is None


def test_extension_moves_the_deadline_of_limit_and_budget():
    p = build_policy({"preset": "studiolab-2023"})
    past = [Interval(T0 - 8 * H, T0 - 2 * H)]
    d = deadline(p, "cpu", T0, 30 * M, past, T0)
    assert d.stop_at == pytest.approx(T0 + 2 * H + 30 * M)
    assert deadline(p, "cpu", T0, 30 * M, [], T0).stop_at == T0 + 4 * H + 30 * M


def test_start_allowed_without_budget_or_with_budget_left():
    p = build_policy({"preset": "studiolab-2023"})
    assert start_decision(Policy(), "gpu", [Interval(T0 - 20 * H, T0)], T0).allowed
    assert start_decision(p, "cpu", [Interval(T0 - 7 * H, T0 - H)], T0).allowed  # 2h left


def test_start_refused_when_budget_exhausted_names_reset_time():
    p = build_policy({"preset": "studiolab-2023"})
    # GPU budget 4h used entirely from T0-5h to T0-1h. 5 minutes (min_start) come back at T0-5h+24h+5m.
    past = [Interval(T0 - 5 * H, T0 - H)]
    d = start_decision(p, "gpu", past, T0)
    assert not d.allowed
    assert d.available_at == pytest.approx(T0 + 19 * H + 5 * M)
    assert f"until {format_clock(T0 + 19 * H + 5 * M)} UTC" in d.message
    assert "budget exhausted" in d.message
    # and at that moment a start is allowed
    assert start_decision(p, "gpu", past, d.available_at + 1).allowed


def test_start_refused_when_less_than_min_start_left():
    p = build_policy({"preset": "studiolab-2023", "min_start": "10m"})
    past = [Interval(T0 - 4 * H + 5 * M, T0)]  # 5m of 4h left
    d = start_decision(p, "gpu", past, T0)
    assert not d.allowed
    # 10m left once 5m of the old session have left the window
    assert d.available_at == pytest.approx(T0 - 4 * H + 5 * M + 24 * H + 5 * M)


def test_budget_available_at_impossible():
    assert budget_available_at([], 60, 120, T0) is None


def test_budget_left():
    p = build_policy({"preset": "studiolab-2023"})
    assert budget_left(p, "cpu", [Interval(T0 - H, None)], T0) == 7 * H
    assert budget_left(p, "cpu", [Interval(T0 - 9 * H, None)], T0) == 0
    assert budget_left(Policy(), "cpu", [], T0) is None


def test_warnings_due_once_each():
    offsets = (15 * M, 5 * M)
    assert due_warnings(20 * M, offsets, []) == []
    assert due_warnings(15 * M, offsets, []) == [15 * M]
    assert due_warnings(14 * M, offsets, [15 * M]) == []
    assert due_warnings(5 * M, offsets, [15 * M]) == [5 * M]
    assert due_warnings(4 * M, offsets, [15 * M, 5 * M]) == []


def test_late_run_reports_all_missed_warnings_together_and_none_after_the_end():
    offsets = (15 * M, 5 * M)
    assert due_warnings(3 * M, offsets, []) == [15 * M, 5 * M]
    assert due_warnings(0, offsets, []) == []
    assert due_warnings(-10, offsets, []) == []
