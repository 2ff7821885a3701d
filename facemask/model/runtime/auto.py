"""The ``auto`` runtime: the fastest acceptable model variant on this CPU, by measurement.

``create()`` lists the variants available here (:func:`available_variants`), takes their
rates from the measurement cache or measures them (a few warm batches each at the
service's batch size, see :mod:`facemask.model.variants`), chooses the fastest whose
dev-set AP50 is within ``tolerance`` of float32 (the model card) and returns that variant's
own runtime (``tensorflow`` or ``tflite``), with the :class:`~facemask.model.variants.Choice`
as its ``selection`` attribute.

TensorFlow's bf16 option is process-wide, so one process measures one TensorFlow
precision: bf16 where the CPU computes bf16 natively (there it beats float32), else
float32.

TensorFlow is measured in a child process (``python -m facemask.model.runtime.auto``)
unless this process has imported it already: importing it costs ~890 MiB of resident
memory that stays for the life of the process, and when a TFLite variant wins the service
never needs it. The TFLite variants are measured here (their interpreter is small, and the
winner's is kept).

On 64-bit ARM (a Raspberry Pi, Graviton) TensorFlow is not measured at all: the int8 TFLite
model is taken when it is built and within the tolerance (XNNPACK's int8 kernels are the
fast path there, and TensorFlow's memory does not fit a small board); only its own rate is
measured, for the log and the metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from facemask.model import store as modelstore
from facemask.model import variants as mv
from facemask.model.runtime.base import Runtime, RuntimeConfig, native_bf16, usable_cpus

logger = logging.getLogger(__name__)

SOURCE_MODEL = "face_mask_detection.pb"
ARM64_MACHINES = frozenset({"aarch64", "arm64"})
"""``platform.machine()`` of 64-bit ARM, where int8 is taken without measuring TensorFlow."""
ARM64_VARIANT = mv.Variant("tflite", "int8")
CHILD_TIMEOUT_S = 300.0
"""Longest wait for the child process measuring TensorFlow (import, load, warm batches)."""
_RATES_PREFIX = "facemask-variant-rates "


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The files of one model that ``auto`` chooses among, and what is known of them.

    ``source`` is its ``model.pb`` (the TensorFlow variants; None: none), ``tflite`` its
    ``.tflite`` files by precision, ``ap50_deltas`` variant key -> dev-set AP50 minus
    TensorFlow float32's (a variant without one is never chosen), ``model_id`` the id its
    measurements are cached under, in ``cache_file`` (one file per model: a service that
    swaps models keeps each one's figures)."""

    source: Path | None
    tflite: Mapping[str, Path] = field(default_factory=dict)
    ap50_deltas: Mapping[str, float] = field(default_factory=dict)
    model_id: str = ""
    cache_file: str = mv.CACHE_FILE

    def path(self, variant: mv.Variant) -> Path | None:
        """The file ``variant`` runs."""
        if variant.runtime == "tensorflow":
            return self.source
        return self.tflite.get(variant.precision)


def builtin_files(*, strict: bool = False) -> ModelFiles:
    """The pinned model (the model store's ``face_mask_detection.pb``) and the TFLite
    variants ``facemask models build`` made of it here, with the project card's accuracy
    for the calibration each int8 was built with. ``strict``:
    a missing ``model.pb`` raises :class:`~facemask.model.store.ModelStoreError` (it says
    how to fetch it); else the TensorFlow variants are just not available."""
    from facemask.model import quantize

    tflite = {
        precision: quantize.variant_path(precision)
        for precision in quantize.VARIANTS
        if quantize.variant_path(precision).is_file()
    }
    try:
        source = modelstore.artifact_path(SOURCE_MODEL)
    except modelstore.ModelStoreError:
        if strict:
            raise
        return ModelFiles(None, tflite)
    sha256 = modelstore.sha256_file(source)
    deltas = mv.load_ap50_deltas(sha256, calibrations=built_calibrations())
    return ModelFiles(source, tflite, deltas, sha256[:12])


def available_variants(files: ModelFiles, *, every_precision: bool = False) -> list[mv.Variant]:
    """The variants whose model files exist in ``files``.

    TensorFlow's precision is process-wide: measured in this process, only one TensorFlow
    variant is available (the precision the process runs, else bf16 where the CPU has
    native bf16, else float32). ``every_precision`` (TensorFlow measured in child
    processes, one per precision, nothing fixed here yet) offers both, so the faster one
    is measured rather than guessed from CPU flags."""
    out: list[mv.Variant] = []
    if files.source is not None:
        from facemask.model.runtime.tensorflow import _PROCESS_STATE

        fixed = _PROCESS_STATE.get("precision")
        if every_precision and not fixed:
            out += [mv.Variant("tensorflow", p) for p in ("float32", "bf16")]
        else:
            tf_precision = fixed or ("bf16" if native_bf16() else "float32")
            out.append(mv.Variant("tensorflow", tf_precision))
    out += [mv.Variant("tflite", p) for p in ("float32", "int8") if p in files.tflite]
    return out


def built_calibrations() -> dict[str, str | None]:
    """Variant key -> the calibration sha256 of each TFLite model built here (its stamp),
    so the card's accuracy of that very calibration applies."""
    from facemask.model import quantize

    return {
        mv.Variant("tflite", precision).key: quantize.built_calibration(precision)
        for precision in quantize.VARIANTS
        if quantize.variant_path(precision).is_file()
    }


class AutoConfig(RuntimeConfig):
    """Options of the ``auto`` runtime (see the module)."""

    type: Literal["auto"] = "auto"
    batch_size: int = Field(32, ge=1, le=1024, description="batch size measured (the service's)")
    tolerance: float = Field(
        mv.DEFAULT_TOLERANCE, ge=0.0, le=1.0, description="largest |AP50 delta| vs float32"
    )
    interpreters: int = Field(1, ge=1, description="tflite interpreters (when it is chosen)")
    cache: bool = Field(True, description="reuse measurements of this CPU and model version")

    def create(self) -> Runtime:
        """Measure (or read the cache), choose, and return the chosen variant's runtime."""
        if self.model_path is not None:
            raise ValueError("the auto runtime chooses its model file; set a runtime instead")
        return select_runtime(self)


def _create_variant(config: AutoConfig, variant: mv.Variant, path: Path | None) -> Any:
    from facemask.model.runtime import create_runtime

    options: dict[str, Any] = dict(variant.options())
    if path is not None:  # else the runtime's own file of the variant
        options["model_path"] = path
    if config.threads:
        options["threads"] = config.threads
    if variant.runtime == "tflite":
        options["interpreters"] = config.interpreters
    return create_runtime(variant.runtime, **options)


def machine() -> str:
    """This machine's architecture (``platform.machine()``, lower case)."""
    return platform.machine().lower()


def arm64_preference(
    candidates: Sequence[mv.Variant], deltas: dict[str, float], tolerance: float
) -> mv.Variant | None:
    """The variant taken without measuring the others on 64-bit ARM: int8 when it is built
    and its AP50 is within ``tolerance``; None elsewhere (then every candidate is measured)."""
    if machine() not in ARM64_MACHINES or ARM64_VARIANT not in candidates:
        return None
    delta = deltas.get(ARM64_VARIANT.key)
    return ARM64_VARIANT if delta is not None and abs(delta) <= tolerance else None


def tensorflow_imported() -> bool:
    """Whether this process has imported TensorFlow (measuring it here then costs nothing)."""
    return "tensorflow" in sys.modules


_CHILD_COMMAND = f"import sys; from {__name__} import _child_main; sys.exit(_child_main())"
"""The child's program: this module imported by name (not run as ``__main__``, which would
define a second copy of the runtime's config class)."""


def measure_in_child(
    config: AutoConfig, variants: Sequence[mv.Variant], files: ModelFiles | None = None
) -> list[mv.Measurement]:
    """Measure ``variants`` (of ``files``; default: the runtimes' own files) in a fresh
    Python process (same interpreter, environment and CPU affinity), so what they import
    stays out of this one. An empty list, logged, when the child fails."""
    paths = [] if files is None else [(v, files.path(v)) for v in variants]
    argv = [
        sys.executable,
        "-c",
        _CHILD_COMMAND,
        "--batch-size",
        str(config.batch_size),
        "--threads",
        str(config.threads or 0),
        *[arg for v, path in paths if path is not None for arg in ("--model", f"{v.key}={path}")],
        *[v.key for v in variants],
    ]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("measuring %s in a child process failed: %s", variants, exc)
        return []
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RATES_PREFIX):
            try:
                rates = json.loads(line[len(_RATES_PREFIX) :])
                return [mv.Measurement(mv.Variant.parse(k), float(v)) for k, v in rates.items()]
            except (ValueError, TypeError, AttributeError) as exc:
                logger.warning("unreadable rates from the child process: %s", exc)
                return []
    logger.warning(
        "measuring model variants in a child process failed (exit %s): %s",
        proc.returncode,
        proc.stderr.strip().splitlines()[-1:] or "no output",
        extra={"variants": [v.key for v in variants], "returncode": proc.returncode},
    )
    return []


def measure_variants(
    config: AutoConfig,
    candidates: Sequence[mv.Variant],
    files: ModelFiles,
    *,
    timer: mv.Timer,
    isolate_tensorflow: bool,
) -> tuple[list[mv.Measurement], dict[str, Any]]:
    """Measure the candidates: TFLite here (the runtimes stay open, by key), TensorFlow in
    a child process when ``isolate_tensorflow`` (else here too)."""
    here = [v for v in candidates if not (isolate_tensorflow and v.runtime == "tensorflow")]
    away = [v for v in candidates if v not in here]
    measurements, runtimes = mv.measure(
        here, lambda v: _create_variant(config, v, files.path(v)), config.batch_size, timer=timer
    )
    for variant in away:  # a child per TensorFlow precision (process-wide in TensorFlow)
        measurements += measure_in_child(config, [variant], files)
    order = {v.key: i for i, v in enumerate(candidates)}
    measurements.sort(key=lambda m: order.get(m.variant.key, len(order)))
    return measurements, runtimes


def select_runtime(
    config: AutoConfig,
    files: ModelFiles | None = None,
    *,
    timer: mv.Timer | None = None,
    isolate_tensorflow: bool | None = None,
) -> Runtime:
    """The runtime of the fastest acceptable variant of ``files`` (default: the pinned
    model, :func:`builtin_files`; the service passes a stored version's); its
    ``selection`` attribute says why.

    ``isolate_tensorflow`` (default: unless TensorFlow is imported already) measures the
    TensorFlow variant in a child process, see the module. Raises
    :class:`~facemask.model.variants.NoVariantError` when no variant is eligible."""
    files = files or builtin_files(strict=True)
    deltas = dict(files.ap50_deltas)
    isolate = not tensorflow_imported() if isolate_tensorflow is None else isolate_tensorflow
    available = available_variants(files=files, every_precision=isolate)
    reference = [mv.Variant("tensorflow", "float32")] if files.source is not None else []
    candidates = [v for v in available if v.key in deltas] or reference
    if not candidates:
        raise mv.NoVariantError("no model.pb and no .tflite file of known accuracy to choose from")
    skipped: dict[str, str] = {}
    preferred = arm64_preference(candidates, deltas, config.tolerance)
    if preferred is not None:
        skipped = {
            v.key: f"not measured on {machine()}: {preferred.key} preferred"
            for v in candidates
            if v != preferred
        }
        candidates = [preferred]
    if not deltas:  # no card: nothing is known to be accurate but the reference itself
        deltas = {mv.REFERENCE: 0.0}
    runtimes: dict[str, Any] = {}
    if len(candidates) == 1 and isolate and candidates[0].runtime == "tensorflow":
        # nothing to compare, and a child process (seconds, ~1 GiB) to spare: the lone
        # TensorFlow variant is taken unmeasured when its accuracy is within the tolerance
        choice = _lone_choice(candidates[0], deltas, config.tolerance)
    else:
        choice, runtimes = _measured_choice(
            config, candidates, files, deltas, timer=timer, isolate_tensorflow=isolate
        )
        choice = dataclasses.replace(choice, rejected={**skipped, **choice.rejected})
    runtime: Runtime = runtimes.pop(choice.variant.key, None) or _create_variant(
        config, choice.variant, files.path(choice.variant)
    )
    for other in runtimes.values():
        other.close()
    runtime.selection = choice  # type: ignore[attr-defined]  # read by the service
    logger.debug("model variant chosen", extra=choice.log_fields())
    return runtime


def _measured_choice(
    config: AutoConfig,
    candidates: Sequence[mv.Variant],
    files: ModelFiles,
    deltas: Mapping[str, float],
    *,
    timer: mv.Timer | None,
    isolate_tensorflow: bool,
) -> tuple[mv.Choice, dict[str, Any]]:
    """The choice among ``candidates`` on their rates, from the cache of this CPU, model
    and setup when it has every candidate, else measured (and cached); with the runtimes
    measured here, still open, by variant key."""
    key: dict[str, Any] = {
        "cpu": mv.cpu_model_name(),
        "model_version": files.model_id,
        "batch_size": config.batch_size,
        "threads": config.threads or usable_cpus(),
        "interpreters": config.interpreters,
    }
    directory_file = mv.cache_path() if config.cache else None
    path = directory_file.with_name(files.cache_file) if directory_file is not None else None
    cached = mv.load_cache(path, **key) if path is not None else None
    usable = {v.key for v in candidates}
    if cached is not None and usable <= {m.variant.key for m in cached}:
        measured = [m for m in cached if m.variant.key in usable]
        return dataclasses.replace(mv.choose(measured, deltas, config.tolerance), cached=True), {}
    # no cache, or not every candidate in it (a new model): measure
    measurements, runtimes = measure_variants(
        config,
        candidates,
        files,
        timer=timer or time.perf_counter,
        isolate_tensorflow=isolate_tensorflow,
    )
    if path is not None and measurements:
        mv.save_cache(path, measurements, **key)
    return mv.choose(measurements, deltas, config.tolerance), runtimes


def _lone_choice(variant: mv.Variant, deltas: Mapping[str, float], tolerance: float) -> mv.Choice:
    """``variant``, the only candidate, chosen without a rate (0: not measured) when its
    AP50 delta is known and within ``tolerance``; else the
    :class:`~facemask.model.variants.NoVariantError` of :func:`~facemask.model.variants.choose`."""
    why = mv.accuracy_rejection(variant, deltas, tolerance)
    if why is not None:
        raise mv.no_variant({variant.key: why})
    return mv.Choice(variant, 0.0, deltas[variant.key], (), {})


def _child_main(argv: Sequence[str] | None = None) -> int:
    """The child of :func:`measure_in_child` (``[--batch-size N] [--threads N]
    [--model KEY=PATH]... KEY...``):
    measure the variants and print their rates as one JSON line (see measure_in_child)."""
    parser = argparse.ArgumentParser(
        prog="facemask-measure-variants", description=_child_main.__doc__
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="0: the usable CPUs")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="the file of a variant (default: the runtime's own)",
    )
    parser.add_argument("variants", nargs="+", type=mv.Variant.parse)
    args = parser.parse_args(argv)
    paths = {key: Path(path) for key, _, path in (m.partition("=") for m in args.model)}
    config = AutoConfig.model_validate(
        {"batch_size": args.batch_size, "threads": args.threads or None}
    )
    measurements, runtimes = mv.measure(
        args.variants, lambda v: _create_variant(config, v, paths.get(v.key)), config.batch_size
    )
    for runtime in runtimes.values():
        runtime.close()
    rates = {m.variant.key: m.images_per_second for m in measurements}
    sys.stdout.write(_RATES_PREFIX + json.dumps(rates) + "\n")
    return 0 if measurements else 1
