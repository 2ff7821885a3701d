"""Command-line options that choose and tune the detector runtime, shared by ``detect`` and
``eval``: ``--runtime``, ``--threads``, ``--precision`` (tensorflow), ``--variant`` and
``--interpreters`` (tflite)."""

from __future__ import annotations

import argparse
from typing import Any

from facemask.model.quantize import VARIANTS
from facemask.model.runtime import available_runtimes
from facemask.model.runtime.base import PRECISIONS

RUNTIME_SPECIFIC = {"precision": "tensorflow", "variant": "tflite", "interpreters": "tflite"}
"""Option -> the only runtime that takes it."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the runtime options to a subcommand's parser."""
    parser.add_argument(
        "--runtime",
        default="tensorflow",
        choices=available_runtimes(),
        help="inference runtime (default %(default)s)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="compute threads (default: all CPUs)"
    )
    parser.add_argument(
        "--precision",
        choices=[*PRECISIONS, "auto"],
        default=None,
        help="tensorflow: float32 (default: the reference's numbers), bf16 (oneDNN mixed "
        "precision, about 3x faster on AMX CPUs, AP50 within 0.01) or auto (bf16 where the "
        "CPU has native bf16)",
    )
    parser.add_argument(
        "--variant",
        choices=["upstream", *VARIANTS],
        default=None,
        help="tflite model: upstream (default), or float32 / int8 built by `facemask models build`",
    )
    parser.add_argument(
        "--interpreters",
        type=positive_int,
        default=None,
        help="tflite: interpreters running images in parallel (--threads each)",
    )


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options of :func:`facemask.model.detector.create_detector` from parsed arguments.

    Raises ``ValueError`` when an option does not apply to the chosen runtime.
    """
    options: dict[str, Any] = {}
    if getattr(args, "threads", None) is not None:
        options["threads"] = args.threads  # every runtime takes ``threads``
    for name, runtime in RUNTIME_SPECIFIC.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if args.runtime != runtime:
            raise ValueError(f"--{name} applies to --runtime {runtime} only")
        options[name] = value
    return options
