"""The ``facemask`` command line.

Each sub-command lives in its own module exposing ``configure(parser)`` and ``run(args)``.
Those modules import heavy libraries (TensorFlow, gRPC) inside ``run`` only, so
``facemask ingest`` on a Raspberry Pi never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from facemask import __version__
from facemask.log import setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("facemask.commands.models", "fetch and verify the model artifacts"),
    "detect": ("facemask.commands.detect", "detect masked / unmasked faces in images and videos"),
    "eval": ("facemask.commands.evaluate", "COCO evaluation of the detector on an annotated set"),
    "serve-inference": ("services.inference.__main__", "run the gRPC inference service"),
    "ingest": ("services.ingest.__main__", "run an ingest node (cameras to Redis Streams)"),
    "serve-alerts": ("services.alerts.__main__", "run the alert service and dashboard"),
    "run": ("facemask.commands.launch", "run the whole pipeline locally"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="facemask", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"facemask {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if not _available(module_name):
            continue
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(child)
        child.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facemask`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
