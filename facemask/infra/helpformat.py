"""``--help`` of every ``facemask`` command and ``python -m services.X``: defaults and examples.

:class:`CommandParser` is the parser class of them all (sub-commands made with
``add_subparsers`` are CommandParsers too). Its :class:`HelpFormatter` appends
``(default: ...)`` to each option that has a default its help does not already name, keeps
multi-line texts (examples, docstrings) as written and wraps one-line ones, and its
``examples`` become an ``Examples:`` section at the end. An option whose real default lives
elsewhere - a service setting, whose argparse default is None so that only an option given
overrides it - shows that default through :func:`show_default`, read only when help is
formatted (so building the parser stays cheap).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

EXAMPLES_HEADING = "Examples:"
HELP_DEFAULT_ATTR = "help_default"
"""Attribute of an :class:`argparse.Action` holding a callable: the default to show."""


def has_default(action: argparse.Action) -> bool:
    """Whether ``action``'s default is worth showing: not None, not suppressed, not the
    False of an on/off flag, not an empty value (a repeatable option's ``[]``)."""
    default = getattr(action, HELP_DEFAULT_ATTR, None) or action.default
    if callable(default):
        return True
    if default is None or default is argparse.SUPPRESS or default is False:
        return False
    return not (isinstance(default, str | list | tuple | dict) and not default)


def show_default(action: argparse.Action, default: Callable[[], Any]) -> argparse.Action:
    """Let ``--help`` show ``default()`` as ``action``'s default (called only when help is
    formatted): for an option whose argparse default is None because the value it
    overrides has its default elsewhere, such as a service setting. Returns ``action``."""
    setattr(action, HELP_DEFAULT_ATTR, default)
    return action


def examples_epilog(examples: str | Sequence[str] | None) -> str | None:
    """The ``Examples:`` section: one command (or ``# comment``) a line, indented."""
    if examples is None:
        return None
    lines = examples.strip("\n").splitlines() if isinstance(examples, str) else list(examples)
    if not lines:
        return None
    return "\n".join([EXAMPLES_HEADING, *(f"  {line}" if line else "" for line in lines)])


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (:func:`has_default`, :func:`show_default`), multi-line descriptions
    and epilogs kept as written, one-line ones wrapped."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower() or not has_default(action):
            return text
        shown = getattr(action, HELP_DEFAULT_ATTR, None)
        if shown is not None:
            value = str(shown()).replace("%", "%%")
            return f"{text} (default: {value})" if text else f"(default: {value})"
        return super()._get_help_string(action) or ""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip("\n"):
            return argparse.RawDescriptionHelpFormatter._fill_text(self, text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` with :class:`HelpFormatter` and an ``examples``
    epilog (a string of lines or a sequence of lines; see :func:`examples_epilog`).

    Subclasses may look examples up by the parser's ``prog`` in :meth:`examples_for`,
    which also serves the sub-commands argparse creates with this class.
    """

    def __init__(self, *, examples: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        if examples is None:
            examples = self.examples_for(kwargs.get("prog"))
        if kwargs.get("epilog") is None:
            kwargs["epilog"] = examples_epilog(examples)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)

    def examples_for(self, prog: str | None) -> str | Sequence[str] | None:
        """Examples of the command ``prog`` when none are given (here: none)."""
        return None
