"""lab_users' optional ``email`` (issue 19, contract 4): checked with the other keys, carried in lab_users_resolved."""

from __future__ import annotations

import pytest

from metalab import rules


def test_an_email_is_carried_and_a_missing_one_is_none() -> None:
    result = rules.validate_users([{"name": "dora", "email": "dora@example.org"}, {"name": "emil"}])
    assert result["errors"] == []
    assert [u["email"] for u in result["users"]] == ["dora@example.org", None]


@pytest.mark.parametrize("bad", ["dora", "dora@example", "dora @example.org", "a@b.org\nBcc: x@y.org", "", 42])
def test_a_bad_email_is_named_and_nothing_resolves(bad: object) -> None:
    result = rules.validate_users([{"name": "dora", "email": bad}])
    assert result["users"] == []
    [error] = result["errors"]
    assert error.startswith("lab_users[0] (name 'dora'): e-mail")
