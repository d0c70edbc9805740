"""Every labctl command and option the documentation shows exists: the docs follow `labctl --help`."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import click
import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md")])
# `labctl ...` in inline code, and command lines in fenced blocks (optionally after a shell prompt or `eval "$(`).
INLINE = re.compile(r"`(labctl [^`]*)`")
BLOCK_LINE = re.compile(r"^\s*(?:\$ )?(labctl .*)$")
WORD = re.compile(r"[a-z][a-z-]*")
SHELL_END = re.compile(r"\s*(?:;|&&|\s\|\s|>)")


def labctl() -> click.Group:
    return importlib.import_module("metalab.labctl.cli").cli


def shown(pages: List[Path]) -> Iterator[Tuple[str, str]]:
    """(page, command line) for every labctl command line the pages show."""
    for page in pages:
        fenced = False
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                match = BLOCK_LINE.match(line)
                if match:
                    yield page.name, match.group(1).split("#")[0].strip()
            else:
                for match in INLINE.finditer(line):
                    yield page.name, match.group(1)


def problems(group: click.Group, line: str) -> List[str]:
    """What in one documented command line labctl does not have (an unknown command, subcommand or option)."""
    ctx = click.Context(group)
    line = SHELL_END.split(line)[0]  # what follows ; && | > is another command, or a file
    words = line.split()[1:]
    if not words or not WORD.fullmatch(words[0]):
        return []  # `labctl` alone, or `labctl --help`
    command = group.get_command(ctx, words[0])
    if command is None:
        return [f"no command {words[0]!r}"]
    rest = words[1:]
    if isinstance(command, click.Group):
        if rest and WORD.fullmatch(rest[0].split("/")[0]):
            for name in rest[0].split("/"):
                if command.get_command(ctx, name) is None:
                    return [f"no command {words[0]} {name!r}"]
            command = command.get_command(ctx, rest[0].split("/")[0])
            rest = rest[1:]
        elif rest and not rest[0].startswith("-") and rest[0] != "...":
            return [f"{words[0]} needs a subcommand, not {rest[0]!r}"]
    assert command is not None
    # `labctl users --apply` (no subcommand): an option of any of its subcommands.
    commands = (
        [command.get_command(ctx, n) for n in command.list_commands(ctx)] if isinstance(command, click.Group) else []
    )
    options = {
        opt for c in [command, *commands] if c for param in c.params for opt in (*param.opts, *param.secondary_opts)
    }
    options |= {"--help", "-h"}
    out = []
    for word in rest:
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", word.strip("[]()|")):
            if option not in options:
                out.append(f"no option {option} for {line.split()[1]}")
    return out


def test_the_scan_reads_inline_code_and_command_blocks(tmp_path):
    page = tmp_path / "x.md"
    page.write_text(
        "Run `labctl users add bob --gpu`; labctl refuses prose.\n```sh\n$ labctl doctor --limit h  # x\n```\n"
    )
    assert list(shown([page])) == [("x.md", "labctl users add bob --gpu"), ("x.md", "labctl doctor --limit h")]


def test_a_command_or_option_labctl_lacks_is_reported():
    group = labctl()
    assert problems(group, "labctl users add bob --gpu --quota 5G") == []
    assert problems(group, "labctl session start/stop/list/token") == []
    assert problems(group, "labctl users rename alice") == ["no command users 'rename'"]
    assert problems(group, "labctl provision --force") == ["no option --force for provision"]
    assert problems(group, "labctl frobnicate") == ["no command 'frobnicate'"]
    assert problems(group, "labctl users --apply") == []
    assert problems(group, "labctl users --force") == ["no option --force for users"]
    assert problems(group, "labctl sandbox inventory demo > inv.yml; ansible-playbook -i inv.yml x.yml") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_documented_labctl_commands_exist(page):
    group = labctl()
    wrong = [f"`{line}`: {p}" for _, line in shown([page]) for p in problems(group, line)]
    assert wrong == [], f"{page.relative_to(ROOT)} shows what `labctl --help` does not have: {wrong}"
