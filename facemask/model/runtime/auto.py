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
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import Field

from facemask.model import store as modelstore
from facemask.model import variants as mv
from facemask.model.runtime.base import Runtime, RuntimeConfig, native_bf16, usable_cpus

logger = logging.getLogger(__name__)

SOURCE_MODEL = "face_mask_detection.pb"


def available_variants() -> list[mv.Variant]:
    """The variants whose model files exist here (TensorFlow: one precision per process)."""
    out: list[mv.Variant] = []
    try:
        modelstore.artifact_path(SOURCE_MODEL)
    except modelstore.ModelStoreError:
        pass
    else:
        from facemask.model.runtime.tensorflow import _PROCESS_STATE

        fixed = _PROCESS_STATE.get("precision")
        tf_precision = fixed or ("bf16" if native_bf16() else "float32")
        out.append(mv.Variant("tensorflow", tf_precision))
    from facemask.model import quantize

    for precision in ("float32", "int8"):
        if quantize.variant_path(precision).is_file():
            out.append(mv.Variant("tflite", precision))
    return out


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


def _create_variant(config: AutoConfig, variant: mv.Variant) -> Any:
    from facemask.model.runtime import create_runtime

    options: dict[str, Any] = dict(variant.options())
    if config.threads:
        options["threads"] = config.threads
    if variant.runtime == "tflite":
        options["interpreters"] = config.interpreters
    return create_runtime(variant.runtime, **options)


def select_runtime(config: AutoConfig, *, timer: mv.Timer | None = None) -> Runtime:
    """The chosen variant's runtime (its ``selection`` attribute says why)."""
    source = modelstore.artifact_path(SOURCE_MODEL)
    sha256 = modelstore.sha256_file(source)
    deltas = mv.load_ap50_deltas(sha256)
    candidates = [v for v in available_variants() if v.key in deltas] or [
        mv.Variant("tensorflow", "float32")
    ]
    key: dict[str, Any] = {
        "cpu": mv.cpu_model_name(),
        "model_version": sha256[:12],
        "batch_size": config.batch_size,
        "threads": config.threads or usable_cpus(),
    }
    path = mv.cache_path()
    cached = mv.load_cache(path, **key) if config.cache else None
    if cached is not None:
        usable = {v.key for v in candidates}
        cached = [m for m in cached if m.variant.key in usable] or None
    runtimes: dict[str, Any] = {}
    if cached is not None:
        measurements, from_cache = cached, True
    else:
        measurements, runtimes = mv.measure(
            candidates,
            lambda v: _create_variant(config, v),
            config.batch_size,
            timer=timer or time.perf_counter,
        )
        from_cache = False
        if config.cache and measurements:
            mv.save_cache(path, measurements, **key)
    if not deltas:  # no card: nothing is known to be accurate but the reference itself
        deltas = {mv.REFERENCE: 0.0}
    choice = mv.choose(measurements, deltas, config.tolerance)
    if from_cache:
        choice = mv.Choice(
            choice.variant,
            choice.images_per_second,
            choice.ap50_delta,
            choice.measurements,
            choice.rejected,
            cached=True,
        )
    runtime: Runtime = runtimes.pop(choice.variant.key, None) or _create_variant(
        config, choice.variant
    )
    for other in runtimes.values():
        other.close()
    runtime.selection = choice  # type: ignore[attr-defined]  # read by the service
    logger.debug("model variant chosen", extra=choice.log_fields())
    return runtime
