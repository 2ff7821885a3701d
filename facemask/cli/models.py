"""``facemask models fetch|list|dir|build``: manage the pinned upstream artifacts and the
TFLite models derived from them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facemask.model import quantize
from facemask.model import store as modelstore

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` sub-commands."""
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    text = "fetch (mirror or download) and verify artifacts"
    fetch = sub.add_parser("fetch", help=text, description=text)
    fetch.add_argument(
        "--group",
        action="append",
        choices=["model", "samples"],
        help="artifact group to fetch (repeatable; default: model and samples)",
    )
    fetch.add_argument("--all", action="store_true", help="include optional artifacts (caffe)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    for name, text in (
        ("list", "list the manifest and what is cached"),
        ("dir", "print the cache directory"),
    ):
        sub.add_parser(name, help=text, description=text)
    text = "convert the frozen graph to TFLite float32 and int8 (skipped when up to date)"
    build = sub.add_parser("build", aliases=["quantize"], help=text, description=text)
    build.add_argument(
        "--variant",
        action="append",
        choices=list(quantize.VARIANTS),
        help="variant to build (repeatable; default: both)",
    )
    build.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="images calibrating int8 (default: ../shared/data/facemask-dev/images when "
        "present, else the sample images)",
    )
    build.add_argument("--force", action="store_true", help="build even when up to date")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; one clear error line and exit 1 on failure."""
    if args.models_command == "dir":
        sys.stdout.write(f"{modelstore.cache_dir()}\n")
        return 0
    if args.models_command in ("build", "quantize"):
        return _build(args)
    if args.models_command == "list":
        for artifact in modelstore.load_manifest():
            cached = (modelstore.cache_dir() / artifact.name).is_file()
            state = "cached" if cached else "missing"
            sys.stdout.write(f"{artifact.name}\t{artifact.group}\t{state}\t{artifact.sha256}\n")
        return 0
    try:
        paths = modelstore.fetch(
            args.group or ("model", "samples"), include_optional=args.all, force=args.force
        )
    except modelstore.ModelStoreError as exc:
        sys.stderr.write(f"facemask models fetch: error: {exc}\n")
        return 1
    logger.info("%d artifacts verified in %s", len(paths), modelstore.cache_dir())
    return 0


def _build(args: argparse.Namespace) -> int:
    try:
        results = quantize.build(
            args.variant or tuple(quantize.VARIANTS),
            calibration_dir=args.calibration,
            force=args.force,
        )
    except quantize.QuantizeError as exc:
        sys.stderr.write(f"facemask models build: error: {exc}\n")
        return 1
    for result in results:
        state = f"built in {result.seconds:.1f} s" if result.built else "up to date"
        sys.stdout.write(f"{result.variant}\t{result.path}\t{state}\n")
    return 0
