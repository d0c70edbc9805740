"""Session policy: durations, per-kind limits, rolling budgets and warnings.

Pure functions only. Every function that depends on the time takes ``now`` (UTC epoch seconds) explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from metalab.rules import (  # noqa: F401 - the session settings are rules, re-exported for the guard
    DEFAULT_LIMITS,
    DEFAULT_MIN_START,
    DEFAULT_WARNINGS,
    KINDS,
    PRESETS,
    WINDOW,
    Policy,
    build_policy,
    format_clock,
    format_duration,
    format_iso,
    parse_duration,
)

# ---------------------------------------------------------------------------------------------------------------
# Rolling budgets


@dataclass(frozen=True)
class Interval:
    """A past or running session of one kind: [start, end); end None = still running."""

    start: float
    end: Optional[float] = None


def used_in_window(intervals: Iterable[Interval], at: float, window: int = WINDOW) -> float:
    """Seconds of the intervals inside [at - window, at]; running intervals count up to ``at``."""
    lo = at - window
    total = 0.0
    for iv in intervals:
        end = at if iv.end is None else min(iv.end, at)
        start = max(iv.start, lo)
        if end > start:
            total += end - start
    return total


def _first_reaching(fn, target: float, now: float, breakpoints: Iterable[float]) -> Optional[float]:  # type: ignore[no-untyped-def]
    """First t >= now with fn(t) >= target, for fn piecewise linear between the breakpoints."""
    points = sorted({now} | {b for b in breakpoints if b > now})
    prev_t = points[0]
    prev_v = fn(prev_t)
    if prev_v >= target:
        return prev_t
    for t in points[1:]:
        v = fn(t)
        if v >= target:
            # linear between prev_t and t
            return prev_t + (target - prev_v) * (t - prev_t) / (v - prev_v)
        prev_t, prev_v = t, v
    return None


def _breakpoints(intervals: Sequence[Interval], window: int) -> List[float]:
    points: List[float] = []
    for iv in intervals:
        points.append(iv.start + window)
        if iv.end is not None:
            points.append(iv.end + window)
    return points


def budget_end(
    past: Sequence[Interval], running_start: float, budget: int, now: float, window: int = WINDOW
) -> Optional[float]:
    """When the running session (started at running_start) exhausts the rolling budget; None = never.

    ``past`` are the user's other sessions of the same kind (closed ones; the running one is added here).
    Older sessions leaving the window give time back while the session runs; that is taken into account.
    """
    intervals = list(past) + [Interval(running_start, None)]
    return _first_reaching(
        lambda t: used_in_window(intervals, t, window), float(budget), now, _breakpoints(intervals, window)
    )


def budget_available_at(
    past: Sequence[Interval], budget: int, needed: int, now: float, window: int = WINDOW
) -> Optional[float]:
    """The first time >= now at which at least ``needed`` seconds of budget are left (None if never)."""
    if needed > budget:
        return None
    intervals = list(past)
    return _first_reaching(
        lambda t: budget - used_in_window(intervals, t, window), float(needed), now, _breakpoints(intervals, window)
    )


# ---------------------------------------------------------------------------------------------------------------
# Running sessions and start decisions


@dataclass(frozen=True)
class Deadline:
    stop_at: float  # when the guard stops the session
    reason: str  # "limit" or "budget": which one binds
    limit_at: float  # started + session limit + extensions
    budget_at: Optional[float]  # when the budget runs out (+ extensions); None = no budget


def deadline(
    policy: Policy,
    kind: str,
    started: float,
    extended: int,
    past: Sequence[Interval],
    now: float,
    window: int = WINDOW,
) -> Deadline:
    """Stop time of a running session: the earlier of session limit and budget, both moved by admin extensions."""
    limit_at = started + policy.limit(kind) + extended
    budget = policy.budget(kind)
    budget_at: Optional[float] = None
    if budget is not None:
        end = budget_end(past, started, budget, now, window)
        if end is not None:
            budget_at = end + extended
    if budget_at is not None and budget_at < limit_at:
        return Deadline(budget_at, "budget", limit_at, budget_at)
    return Deadline(limit_at, "limit", limit_at, budget_at)


def time_left(policy: Policy, kind: str, started: float, extended: int, past: Sequence[Interval], now: float) -> float:
    """Seconds until the running session is stopped (min of session limit and remaining budget); may be < 0."""
    return deadline(policy, kind, started, extended, past, now).stop_at - now


def budget_left(policy: Policy, kind: str, intervals: Sequence[Interval], now: float) -> Optional[float]:
    """Seconds of budget left now (running sessions counted up to now); None = no budget for this kind."""
    budget = policy.budget(kind)
    if budget is None:
        return None
    return max(0.0, budget - used_in_window(intervals, now))


@dataclass(frozen=True)
class StartDecision:
    allowed: bool
    available_at: Optional[float] = None  # when a start is possible again (budget refusals)
    message: str = ""


def start_decision(policy: Policy, kind: str, past: Sequence[Interval], now: float) -> StartDecision:
    """Whether a ``kind`` runtime may start now as far as the budget goes; if not, when it may."""
    budget = policy.budget(kind)
    if budget is None:
        return StartDecision(True)
    left = budget - used_in_window(past, now)
    if left >= policy.min_start:
        return StartDecision(True)
    at = budget_available_at(past, budget, policy.min_start, now)
    if at is None:  # cannot happen for a valid policy (min_start <= budget); refuse without a time
        return StartDecision(False, None, f"{kind} budget exhausted")
    return StartDecision(
        False,
        at,
        f"{kind} budget exhausted until {format_clock(at)} UTC "
        f"({format_duration(budget)} per 24h; {format_duration(max(left, 0))} left now)",
    )


def due_warnings(time_left_seconds: float, offsets: Iterable[int], sent: Iterable[int]) -> List[int]:
    """Warning offsets that have come due and were not sent yet, largest first.

    A warning is due when time left <= its offset. Nothing is due once the time is up (the guard stops instead).
    The caller sends one notice for all of them (a late guard run does not send a burst) and records them all.
    """
    if time_left_seconds <= 0:
        return []
    done = set(sent)
    return sorted((o for o in offsets if time_left_seconds <= o and o not in done), reverse=True)
