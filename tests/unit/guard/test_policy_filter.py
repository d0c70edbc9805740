"""metalab.lab.guard_policy_errors: the play's controller-side check of the session settings (guard code)."""

from __future__ import annotations

import os

import pytest
from ansible_collections.metalab.lab.plugins.filter.guard import FilterModule, guard_policy_errors

DEFAULTS = {"limits": {"cpu": "12h", "gpu": "4h"}, "budgets": {"cpu": None, "gpu": None}, "warnings": ["15m", "5m"]}


def test_role_defaults_and_valid_overrides_pass():
    overrides = {"alice": {"limits": {"gpu": "6h"}}, "bob": {"budgets": {"cpu": "8h"}}}
    assert guard_policy_errors({**DEFAULTS, "min_start": "5m"}, overrides) == []
    assert guard_policy_errors({**DEFAULTS, "preset": "studiolab-2023"}) == []
    assert FilterModule().filters()["guard_policy_errors"] is guard_policy_errors


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({**DEFAULTS, "limits": {"cpu": "12x"}}, "limits.cpu: invalid duration '12x': unknown unit 'x'"),
        ({**DEFAULTS, "budgets": {"gpu": "-1h"}}, "budgets"),
        ({**DEFAULTS, "warnings": "15m"}, "policy.warnings: expected a list of durations"),
        ({**DEFAULTS, "warnings": ["15m", "soon"]}, "policy.warnings: invalid duration 'soon'"),
        ({**DEFAULTS, "budgets": {"cpu": "1m"}, "min_start": "5m"}, "shorter than policy.min_start"),
        ({**DEFAULTS, "preset": "unlimited"}, "unknown preset 'unlimited'"),
        ("12h", "session settings: expected a mapping"),
    ],
)
def test_bad_session_settings_are_named(policy, expected):
    errors = guard_policy_errors(policy, {"alice": {"limits": {"gpu": "6h"}}})
    assert len(errors) == 1, errors  # not repeated for every override
    assert expected in errors[0]


def test_each_bad_override_is_reported_by_user():
    overrides = {
        "alice": {"limits": {"gpu": "1y"}},
        "bob": {"limits": {"cpu": "2h"}, "uid": 0},
        "carol": "4h",
        "dave": {"budgets": {"cpu": "2h"}},
    }
    errors = guard_policy_errors(DEFAULTS, overrides)
    assert errors[0].startswith("lab_session_overrides.alice: ") and "invalid duration '1y'" in errors[0]
    assert errors[1] == "lab_session_overrides.bob: unknown key(s) uid (allowed: limits, budgets)"
    assert errors[2].startswith("lab_session_overrides.carol: expected a mapping")
    assert len(errors) == 3, errors
    assert guard_policy_errors(DEFAULTS, ["alice"]) == [
        "lab_session_overrides: expected a mapping of lab user name to limits/budgets"
    ]


def test_the_filter_applies_the_rules_the_guard_applies():
    """The controller-side check and the guard on the host read one file: module_utils/rules.py is metalab.rules."""
    from ansible_collections.metalab.lab.plugins.module_utils import rules as plugin_rules

    from metalab import rules
    from metalab.host.guard import policy

    assert os.path.samefile(plugin_rules.__file__, rules.__file__)
    assert policy.build_policy is rules.build_policy
    bad = {"limits": {"cpu": "12 hours"}}
    with pytest.raises(ValueError) as refused:
        rules.build_policy(bad)
    assert guard_policy_errors(bad) == ["lab_session_* settings: " + str(refused.value)]
