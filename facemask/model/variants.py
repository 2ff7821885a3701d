"""Choosing the model variant by measurement: which runtime and precision is fastest here.

Four variants of the one model exist: TensorFlow ``float32`` / ``bf16`` and TFLite
``float32`` / ``int8`` (the TFLite files are built by ``facemask models build``). Which is
fastest depends on the CPU (AMX, AVX512-BF16, VNNI), not on its flags alone, so the
``auto`` runtime (:mod:`facemask.model.runtime.auto`) measures them:

- :func:`choose` is pure: measurements and the accuracy card in, the choice out (the
  fastest variant whose dev-set AP50 is within the tolerance of float32's);
- :func:`measure` times a few warm batches of each variant on a synthetic input, with an
  injected clock (tests fake it);
- :func:`load_cache` / :func:`save_cache` keep the measurements per CPU model and model
  version, so a restart does not measure again (a corrupt cache, or one of another CPU,
  model or batch size, is ignored and rewritten). :func:`cache_path` puts the cache in
  ``$FACEMASK_VARIANT_CACHE_DIR``, else the model cache, else the temporary directory,
  whichever is writable first (a read-only image's model directory is not).

The accuracy of each variant is the model card ``models/variants.json``: the AP50 that
``facemask eval`` measured on the dev set, per source model sha256, and for int8 per
calibration set (the images that calibrated it: the dev set in a checkout, the sample
images in a container image). A variant missing from the card, or an int8 model
calibrated on frames the card does not list, is never chosen by ``auto`` (its accuracy is
unknown).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemask.model import store as modelstore

logger = logging.getLogger(__name__)

CARD_FILE = "variants.json"
CACHE_FILE = "variant-choice.json"
CACHE_DIR_ENV = "FACEMASK_VARIANT_CACHE_DIR"
"""A writable directory for the measurement cache (read-only images: a volume)."""
CACHE_SCHEMA = 1
DEFAULT_TOLERANCE = 0.01
REFERENCE = "tensorflow-float32"
"""The variant the accuracy deltas are measured against."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to run the model: a runtime and its precision."""

    runtime: str
    precision: str

    @property
    def key(self) -> str:
        """``runtime-precision``, e.g. ``tflite-int8`` (a bounded metric label)."""
        return f"{self.runtime}-{self.precision}"

    def options(self) -> dict[str, Any]:
        """The runtime options selecting this variant (:func:`create_runtime`)."""
        if self.runtime == "tflite":
            return {"variant": self.precision}
        return {"precision": self.precision}

    @classmethod
    def parse(cls, key: str) -> Variant:
        """The variant of a ``runtime-precision`` key."""
        runtime, _, precision = key.partition("-")
        if not runtime or not precision:
            raise ValueError(f"not a variant key: {key!r}")
        return cls(runtime, precision)


ALL_VARIANTS = (
    Variant("tensorflow", "float32"),
    Variant("tensorflow", "bf16"),
    Variant("tflite", "float32"),
    Variant("tflite", "int8"),
)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A variant's measured model-only rate (images per second at the service batch)."""

    variant: Variant
    images_per_second: float


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen variant, with the figures it was chosen on."""

    variant: Variant
    images_per_second: float
    ap50_delta: float
    measurements: tuple[Measurement, ...]
    rejected: dict[str, str]
    """Variant key -> why it was not eligible (``accuracy unknown``, ``AP50 -0.02``)."""
    cached: bool = False

    def log_fields(self) -> dict[str, Any]:
        """One structured log line's fields."""
        return {
            "variant": self.variant.key,
            "runtime": self.variant.runtime,
            "precision": self.variant.precision,
            "images_per_second": round(self.images_per_second, 1),
            "ap50_delta": round(self.ap50_delta, 4),
            "measured": {m.variant.key: round(m.images_per_second, 1) for m in self.measurements},
            "rejected": dict(self.rejected),
            "cached": self.cached,
        }


class NoVariantError(RuntimeError):
    """No measured variant is within the accuracy tolerance."""


def accuracy_rejection(
    variant: Variant, ap50_deltas: Mapping[str, float], tolerance: float = DEFAULT_TOLERANCE
) -> str | None:
    """Why ``variant`` may not be chosen for its accuracy (no recorded AP50 delta vs
    float32, or one beyond ``tolerance`` in absolute value); None when it may."""
    delta = ap50_deltas.get(variant.key)
    if delta is None:
        return "accuracy unknown"
    if abs(delta) > tolerance:
        return f"AP50 {delta:+.4f} beyond {tolerance}"
    return None


def no_variant(rejected: Mapping[str, str]) -> NoVariantError:
    """The error for no eligible variant, naming why each was rejected."""
    return NoVariantError(
        "no model variant within the accuracy tolerance: "
        + (", ".join(f"{k}: {why}" for k, why in rejected.items()) or "none measured")
    )


def choose(
    measurements: Iterable[Measurement],
    ap50_deltas: Mapping[str, float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> Choice:
    """The fastest measured variant whose AP50 delta (vs float32, from the model card) is
    within ``tolerance`` in absolute value; a variant without a recorded delta, or with a
    non-positive rate, is not eligible. Ties go to the earlier variant of ``ALL_VARIANTS``.
    Raises :class:`NoVariantError` when none is eligible."""
    measured = tuple(measurements)
    order = {v.key: i for i, v in enumerate(ALL_VARIANTS)}
    rejected: dict[str, str] = {}
    eligible: list[Measurement] = []
    for m in measured:
        why = accuracy_rejection(m.variant, ap50_deltas, tolerance)
        if why is None and not m.images_per_second > 0:
            why = "not measured"
        if why is None:
            eligible.append(m)
        else:
            rejected[m.variant.key] = why
    if not eligible:
        raise no_variant(rejected)
    best = max(eligible, key=lambda m: (m.images_per_second, -order.get(m.variant.key, 99)))
    return Choice(
        variant=best.variant,
        images_per_second=best.images_per_second,
        ap50_delta=ap50_deltas[best.variant.key],
        measurements=measured,
        rejected=rejected,
    )


Timer = Callable[[], float]


def measure_rate(
    infer: Callable[[np.ndarray], object],
    batch_size: int,
    *,
    input_size: tuple[int, int] = (260, 260),
    warm_batches: int = 1,
    timed_batches: int = 2,
    budget_s: float = 0.25,
    timer: Timer = time.perf_counter,
) -> float:
    """Images per second of ``infer`` on a synthetic batch: ``warm_batches`` untimed, then
    up to ``timed_batches`` timed ones (stopping early once ``budget_s`` is spent, at least
    one)."""
    width, height = input_size
    rng = np.random.default_rng(0)
    batch = rng.random((batch_size, height, width, 3), dtype=np.float32)
    for _ in range(warm_batches):
        infer(batch)
    images, elapsed = 0, 0.0
    for _ in range(max(1, timed_batches)):
        start = timer()
        infer(batch)
        elapsed += timer() - start
        images += batch_size
        if elapsed >= budget_s:
            break
    return images / elapsed if elapsed > 0 else 0.0


def measure(
    variants: Sequence[Variant],
    create: Callable[[Variant], Any],
    batch_size: int,
    *,
    timer: Timer = time.perf_counter,
    warm_batches: int = 1,
    timed_batches: int = 2,
    budget_s: float = 0.25,
) -> tuple[list[Measurement], dict[str, Any]]:
    """Create each variant's runtime with ``create`` and measure it; returns the
    measurements and the runtimes still open (by key: the caller keeps the one it chooses
    and closes the rest). A variant that fails to load is logged and skipped."""
    measurements: list[Measurement] = []
    runtimes: dict[str, Any] = {}
    for variant in variants:
        try:
            runtime = create(variant)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            logger.warning("model variant %s unavailable: %s", variant.key, exc)
            continue
        runtimes[variant.key] = runtime
        rate = measure_rate(
            runtime.infer,
            batch_size,
            input_size=tuple(getattr(runtime, "input_size", (260, 260))),
            warm_batches=warm_batches,
            timed_batches=timed_batches,
            budget_s=budget_s,
            timer=timer,
        )
        measurements.append(Measurement(variant, rate))
    return measurements, runtimes


# -- the model card: accuracy per variant ---------------------------------------------


def card_path() -> Path:
    """The model card beside the manifest in use."""
    return modelstore.manifest_path().with_name(CARD_FILE)


def load_ap50_deltas(
    model_sha256: str,
    path: Path | None = None,
    *,
    calibrations: Mapping[str, str | None] | None = None,
) -> dict[str, float]:
    """Variant key -> dev-set AP50 minus float32's, for the model with this sha256 (empty
    when the card is absent or does not know the model).

    A quantized variant's accuracy depends on the frames that calibrated it: its card entry
    lists ``calibrations`` (calibration sha256 -> AP50). ``calibrations`` gives the
    calibration of each variant built here (variant key -> sha256, None: unknown); such a
    variant gets the AP50 of its own calibration, and none (so ``auto`` never chooses it)
    when the card does not list that calibration."""
    path = path or card_path()
    try:
        card = json.loads(path.read_text())
        entry = card["models"][model_sha256]
        variants = entry["variants"]
        ap50 = {key: float(v["ap50"]) for key, v in variants.items()}
        reference = ap50[REFERENCE]
        by_calibration = {
            key: {sha: float(c["ap50"]) for sha, c in v["calibrations"].items()}
            for key, v in variants.items()
            if "calibrations" in v
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("no accuracy card for model %s in %s: %s", model_sha256[:12], path, exc)
        return {}
    for key, built in (calibrations or {}).items():
        known = by_calibration.get(key)
        if known is None:
            continue
        if built in known:
            ap50[key] = known[built]
        elif key in ap50:
            del ap50[key]
            logger.warning(
                "model variant %s: calibration %s not in the accuracy card %s; auto will not "
                "choose it (measure it with `facemask eval` and add it to the card, or select "
                "the variant explicitly)",
                key,
                (built or "unknown")[:12],
                path,
                extra={"variant": key, "calibration_sha256": built or ""},
            )
    return {key: value - reference for key, value in ap50.items()}


def card_ap50_deltas(card: Mapping[str, Any]) -> dict[str, float]:
    """Variant key -> dev-set AP50 minus TensorFlow float32's, from a stored version's
    model card ``metrics.variants`` (written by ``facemask train``: every exported file
    scored on the dev set); empty when the card has no such figures."""
    try:
        ap50 = {str(k): float(v) for k, v in card["metrics"]["variants"].items()}
        reference = ap50[REFERENCE]
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}
    return {key: value - reference for key, value in ap50.items()}


# -- the measurement cache ---------------------------------------------------------------


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def _writable_dir(directory: Path) -> bool:
    """Whether files can be created in ``directory`` (made when absent)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def cache_dirs() -> list[Path]:
    """Where the measurement cache may live, in order of preference: the directory of
    ``$FACEMASK_VARIANT_CACHE_DIR`` (the images set it to a volume's mount point), the
    model cache (a checkout's ``models/cache``), then a ``facemask`` directory in the
    temporary directory (a container's tmpfs or emptyDir ``/tmp``: kept across restarts
    of the process, not of the container)."""
    dirs = []
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        dirs.append(Path(override))
    dirs.append(modelstore.cache_dir())
    dirs.append(Path(tempfile.gettempdir()) / "facemask")
    return dirs


def cache_path() -> Path | None:
    """The measurement cache in the first writable directory of :func:`cache_dirs`; None
    (logged) when none is writable: the variants are then measured at every start."""
    candidates = cache_dirs()
    for directory in candidates:
        if _writable_dir(directory):
            if directory != candidates[0]:
                logger.info(
                    "variant cache in %s: %s not writable",
                    directory,
                    candidates[0],
                    extra={"cache_dir": str(directory), "preferred": str(candidates[0])},
                )
            return directory / CACHE_FILE
    logger.warning(
        "variant measurements not cached: no writable directory (%s); set %s to a writable "
        "directory (a volume or emptyDir) to skip measuring at every start",
        ", ".join(map(str, candidates)),
        CACHE_DIR_ENV,
        extra={"tried": [str(d) for d in candidates]},
    )
    return None


def _cache_key(
    cpu: str, model_version: str, batch_size: int, threads: int, interpreters: int
) -> dict[str, Any]:
    return {
        "schema": CACHE_SCHEMA,
        "cpu": cpu,
        "model": model_version,
        "batch_size": batch_size,
        "threads": threads,
        "interpreters": interpreters,
    }


def load_cache(
    path: Path,
    *,
    cpu: str,
    model_version: str,
    batch_size: int,
    threads: int,
    interpreters: int = 1,
) -> list[Measurement] | None:
    """The cached measurements for this CPU, model version, batch size, thread count and
    TFLite interpreter count; None on a miss (absent, corrupt, or recorded for another
    key)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable variant cache %s: %s", path, exc)
        return None
    key = _cache_key(cpu, model_version, batch_size, threads, interpreters)
    if not isinstance(raw, dict) or any(raw.get(k) != v for k, v in key.items()):
        return None
    try:
        out = [Measurement(Variant.parse(k), float(v)) for k, v in raw["images_per_second"].items()]
    except (KeyError, TypeError, ValueError, AttributeError):
        logger.warning("ignoring malformed variant cache %s", path)
        return None
    return out if out and all(m.images_per_second > 0 for m in out) else None


def save_cache(
    path: Path,
    measurements: Iterable[Measurement],
    *,
    cpu: str,
    model_version: str,
    batch_size: int,
    threads: int,
    interpreters: int = 1,
) -> None:
    """Write the measurements atomically (a failure to write is logged, not raised: the
    cache is an optimisation)."""
    data = {
        **_cache_key(cpu, model_version, batch_size, threads, interpreters),
        "measured_at": time.time(),
        "images_per_second": {m.variant.key: m.images_per_second for m in measurements},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot write the variant cache %s: %s", path, exc)
