"""The ``facemask`` command line (the top layer).

Each sub-command lives in its own module exposing ``configure(parser)`` and ``run(args)``.
Those modules import heavy libraries (TensorFlow, gRPC) inside ``run`` only, so
``facemask ingest`` on a Raspberry Pi never loads TensorFlow.

The library's own commands are listed here; the services add theirs through the
``facemask.commands`` entry-point group (``pyproject.toml``), so the library never names,
let alone imports, :mod:`services`, and a node without a service's extras simply lacks
that command. Every command's ``--help`` shows its options' defaults and examples
(:class:`CliParser`; the library's examples are in :mod:`facemask.cli.examples`, a
service's in the ``EXAMPLES`` of its module).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Sequence

from facemask import __version__
from facemask.cli.examples import EXAMPLES
from facemask.infra.helpformat import CommandParser
from facemask.infra.log import LOG_LEVEL_HELP, setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": (
        "facemask.cli.models",
        "model versions and their rollout; fetch and build the upstream artifacts",
    ),
    "detect": (
        "facemask.cli.detect",
        "detect masked / unmasked faces in images, videos, cameras and streams",
    ),
    "eval": ("facemask.cli.evaluate", "COCO evaluation of the detector on an annotated set"),
    "run": ("facemask.cli.run", "run the whole pipeline locally"),
    "dataset": ("facemask.cli.dataset", "training data from reviewed alerts (COCO export)"),
    "train": ("facemask.cli.train", "fine-tune the detector and register the new model version"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


ENTRY_POINT_GROUP = "facemask.commands"


def _commands() -> dict[str, tuple[str, str]]:
    """The library's commands plus those the installed services register."""
    found = dict(COMMANDS)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, (entry.module, ""))
    return found


class CliParser(CommandParser):
    """The parser of ``facemask`` and of each of its (sub-)commands: defaults shown, and
    the examples of :data:`facemask.cli.examples.EXAMPLES` for its ``prog``."""

    def examples_for(self, prog: str | None) -> Sequence[str] | None:
        return EXAMPLES.get(prog or "")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command.

    Every parser in the tree is a :class:`CliParser`; a service's command takes its
    examples from the ``EXAMPLES`` of its module.
    """
    parser = CliParser(
        prog="facemask",
        description="Face-mask detection: cameras through Redis Streams to batched inference "
        "and alerts, or images, videos and streams on the command line. One command per task; "
        "`facemask COMMAND --help` describes each.",
    )
    parser.add_argument("--version", action="version", version=f"facemask {__version__}")
    parser.add_argument("--log-level", default=None, help=LOG_LEVEL_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _commands().items():
        if not _available(module_name):
            continue
        module = importlib.import_module(module_name)
        text = help_text or getattr(module, "HELP", name)
        child = sub.add_parser(
            name, help=text, description=text, examples=getattr(module, "EXAMPLES", None)
        )
        module.configure(child)
        child.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facemask`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
    except ValueError as exc:
        parser.exit(2, f"facemask: error: {exc}\n")
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
