"""Every command's ``--help``: exits 0, names the default of each option that has one, and
ends with examples that the real parser accepts (so an example cannot rot unnoticed).

Commands are found by walking the real parser tree; the table below must name each of
them, so a new command fails here until it is listed (and given examples).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from facemask.cli import build_parser, main
from facemask.infra.helpformat import EXAMPLES_HEADING, HELP_DEFAULT_ATTR, has_default
from tests.fixtures.paths import REPO_ROOT

COMMANDS = [
    "",
    "models",
    "models fetch",
    "models list",
    "models show",
    "models promote",
    "models rollback",
    "models active",
    "models artifacts",
    "models dir",
    "models build",
    "detect",
    "eval",
    "run",
    "dataset",
    "dataset export",
    "train",
    "ingest",
    "serve-alerts",
    "serve-inference",
]
"""Every command path of ``facemask`` (an alias such as ``models quantize`` is its command's)."""
SERVICE_MODULES = {
    "ingest": "services.ingest",
    "serve-alerts": "services.alerts",
    "serve-inference": "services.inference",
}
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path), parser
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if id(child) not in seen:  # aliases share their command's parser
                    seen.add(id(child))
                    yield from _walk(child, (*path, name))


PARSERS = dict(_walk(build_parser()))


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _option_entry(text: str, action: argparse.Action) -> str:
    """The help entry of ``action`` in ``--help`` output: its lines, whitespace collapsed."""
    lines = text.splitlines()
    head = re.compile(r"^  " + re.escape(action.option_strings[0]) + r"\b")
    for i, line in enumerate(lines):
        if head.match(line):
            entry = [line]
            for following in lines[i + 1 :]:
                if not following.startswith("    ") or following.lstrip().startswith("-"):
                    break
                entry.append(following)
            return " ".join(" ".join(entry).split())
    raise AssertionError(f"{action.option_strings[0]} not in the help:\n{text}")


def _default_texts(action: argparse.Action) -> set[str]:
    shown = getattr(action, HELP_DEFAULT_ATTR, None)
    value = shown() if shown is not None else action.default
    texts = {" ".join(str(value).split())}
    if isinstance(value, float) and value.is_integer():
        texts.add(str(int(value)))
    return texts


def _example_commands(text: str) -> list[list[str]]:
    """The ``facemask ...`` commands of the Examples section (variables before dropped)."""
    section = text.split(EXAMPLES_HEADING, 1)[1]
    commands = []
    for line in section.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        while words and _ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words and words[0] == "facemask":
            commands.append(words[1:])
    return commands


def test_the_table_names_every_command() -> None:
    assert sorted(PARSERS) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "facemask")
def test_help_shows_defaults_and_examples_that_parse(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(command, capsys)
    assert text.startswith(f"usage: facemask {command}".rstrip())
    assert f"\n{EXAMPLES_HEADING}\n" in text
    parser = PARSERS[command]
    with_default = [a for a in parser._actions if a.option_strings and has_default(a)]
    for action in with_default:
        entry = _option_entry(text, action)
        assert "default" in entry, entry
        assert any(value in entry for value in _default_texts(action)), (entry, action.default)
    examples = _example_commands(text)
    assert examples, text
    for argv in examples:
        # an example of a command runs that command (the top level and groups: any below)
        assert " ".join(argv).startswith(command), argv
        args = build_parser().parse_args(argv)
        assert args.command == argv[0]


def test_defaults_are_shown_only_where_there_is_one(capsys: pytest.CaptureFixture[str]) -> None:
    # on/off flags and options without a default say nothing about one
    text = _help("run", capsys)
    assert "(default: False)" not in text and "(default: None)" not in text
    assert "(default: [])" not in text
    assert "(default: 8080)" in _option_entry(text, _action("run", "--dashboard-port"))


def _action(command: str, option: str) -> argparse.Action:
    (action,) = (a for a in PARSERS[command]._actions if option in a.option_strings)
    return action


@pytest.mark.parametrize("command", sorted(SERVICE_MODULES))
def test_python_m_service_help_matches_the_facemask_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m services.X --help`: the same options, defaults and examples as
    # `facemask X --help`, plus its own --log-level.
    result = subprocess.run(
        [sys.executable, "-m", SERVICE_MODULES[command], "--help"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    own = _help(command, capsys)

    def options_and_examples(text: str) -> str:
        body = text.split("\noptions:\n", 1)[1]
        return re.sub(r"\n  --log-level LOG_LEVEL\n(?:    .*\n)+", "\n", body)

    assert options_and_examples(result.stdout) == options_and_examples(own)
