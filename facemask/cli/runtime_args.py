"""Command-line options that choose the model and tune the detector runtime, shared by
``detect`` and ``eval``: ``--model``, ``--runtime``, ``--threads``, ``--precision``
(tensorflow), ``--variant`` and ``--interpreters`` (tflite).

``--model`` takes what :meth:`facemask.model.registry.ModelRegistry.get` resolves (a
version id or unique prefix, ``upstream``, a version directory, a ``.pb`` or ``.tflite``
file); the runtime then loads that model's file of its kind: ``model.pb`` for tensorflow,
the ``--variant`` (default float32) TFLite file for tflite."""

from __future__ import annotations

import argparse
from typing import Any

from facemask.model.quantize import VARIANTS
from facemask.model.registry import UPSTREAM, ModelRegistry, RegistryError
from facemask.model.runtime import available_runtimes
from facemask.model.runtime.base import PRECISIONS

RUNTIME_SPECIFIC = {"precision": "tensorflow", "variant": "tflite", "interpreters": "tflite"}
"""Option -> the only runtime that takes it."""
MODEL_RUNTIMES = ("tensorflow", "tflite")
"""The runtimes that load a given model's file (auto chooses among the upstream's)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model and runtime options to a subcommand's parser."""
    parser.add_argument(
        "--model",
        metavar="VERSION|PATH",
        default=None,
        help="model: a version of the local store (an id or a unique prefix, see `facemask "
        "models list`), upstream (the pinned upstream model, the default), a version "
        "directory, or a .pb / .tflite file",
    )
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
        help="tflite model: upstream (default), or float32 / int8 built by `facemask models "
        "build`; with --model: that model's float32 (default) or int8 file",
    )
    parser.add_argument(
        "--interpreters",
        type=positive_int,
        default=None,
        help="tflite: interpreters running images in parallel (--threads each)",
    )


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options of :func:`facemask.model.detector.create_detector` from parsed arguments.

    Raises ``ValueError`` when an option does not apply to the chosen runtime or the model
    is unknown or lacks the runtime's file.
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
    ref = getattr(args, "model", None)
    if ref is not None:
        options.update(model_options(ref, args.runtime, options.get("variant")))
    return options


def model_options(ref: str, runtime: str, variant: str | None) -> dict[str, Any]:
    """``model_path`` (and the tflite ``variant``) of the model ``ref`` for ``runtime``;
    nothing for ``upstream``, whose files are the runtimes' defaults."""
    try:
        model = ModelRegistry().get(ref)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if model.version == UPSTREAM:
        return {}
    if runtime not in MODEL_RUNTIMES:
        raise ValueError(
            f"--model {ref} needs --runtime {' or '.join(MODEL_RUNTIMES)} (the {runtime} "
            "runtime chooses among the upstream model's files)"
        )
    if runtime == "tflite" and variant == "upstream":
        raise ValueError(
            "--variant upstream is the upstream model's file; with --model choose float32 or int8"
        )
    try:
        path, wanted = model.runtime_file(runtime, variant)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    return {"model_path": path, **({"variant": wanted} if runtime == "tflite" else {})}
