"""A stand-in for a module's run_command in unit tests: scripted answers, every call recorded (test support)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

Answers = Union[Dict[str, Tuple[int, str, str]], List[Tuple[Sequence[str], Tuple[int, str, str]]]]


class Scripted:
    """Answers a command by its first argument (a dict keyed by argv[1]) or by the first matching argv prefix (a list
    of (prefix, answer)); an unexpected command fails the test."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.calls: List[List[str]] = []

    def __call__(self, argv: Sequence[str]) -> Any:
        self.calls.append(list(argv))
        if isinstance(self.answers, dict):
            if argv[1] in self.answers:
                return self.answers[argv[1]]
        else:
            for prefix, answer in self.answers:
                if list(argv[: len(prefix)]) == list(prefix):
                    return answer
        raise AssertionError("unexpected command " + repr(argv))
