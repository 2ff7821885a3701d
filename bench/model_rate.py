"""The model-only rate of the variant a running inference service uses, for comparison
with the service's sustained stream rate in the same benchmark run (issue 15).

:func:`service_variant` reads the runtime and precision the service reports in
``facemask_model_info``; :func:`model_only_rate` runs that variant alone in a
:mod:`bench.model_worker` child (TensorFlow's bf16 option is process-wide, and the
benchmark's own process already runs the float32 upstream loop) on the same kind of
pre-processed frames at the service's batch size, and returns images/s.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelRate:
    """The model-only rate of one variant."""

    runtime: str
    precision: str
    batch: int
    images_per_s: float

    @property
    def variant(self) -> str:
        """``runtime-precision`` (as ``facemask_model_variant_images_per_second``)."""
        return f"{self.runtime}-{self.precision}"


def service_variant(metrics_port: int, timeout: float = 5.0) -> tuple[str, str]:
    """``(runtime, precision)`` from the service's ``facemask_model_info``."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "facemask_model_info" and sample.value == 1:
                return sample.labels["runtime"], sample.labels["precision"]
    raise RuntimeError("the service exports no facemask_model_info")


def worker_config(runtime: str, precision: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The :mod:`bench.model_worker` detector config of a service's variant (``env``: the
    service's settings, to tell the upstream TFLite model from the built float32 one)."""
    if runtime == "tensorflow":
        return {"runtime": "tensorflow", "precision": precision}
    if runtime == "tflite":
        variant = env.get("FACEMASK_INFERENCE_MODEL_VARIANT") or (
            "int8"
            if precision == "int8"
            else "upstream"
            if env.get("FACEMASK_INFERENCE_RUNTIME") == "tflite"
            else "float32"  # chosen by the auto runtime: the built float32 model
        )
        config: dict[str, Any] = {"runtime": "tflite", "variant": variant}
        # The service's interpreter layout, so the model alone runs as it does in the
        # service (threads: per interpreter; without it the worker's thread count).
        if env.get("FACEMASK_INFERENCE_INTERPRETERS"):
            config["interpreters"] = int(env["FACEMASK_INFERENCE_INTERPRETERS"])
        if env.get("FACEMASK_INFERENCE_THREADS"):
            config["num_threads"] = int(env["FACEMASK_INFERENCE_THREADS"])
        return config
    raise ValueError(f"no model-only measurement for runtime {runtime!r}")


def model_only_rate(
    runtime: str,
    precision: str,
    *,
    env: Mapping[str, str],
    threads: int,
    batch: int,
    seconds: float,
    frames: int = 64,
) -> ModelRate:
    """Images/s of the variant alone: the ``model`` workload (pre-processed frames at
    ``batch``) in a worker child, repeated for ``seconds`` after one warm round."""
    from bench.model_worker import WorkerClient

    worker = WorkerClient(worker_config(runtime, precision, env), frames, "auto", threads)
    try:
        worker.call("model", batch=batch)  # warm
        images, start = 0, time.perf_counter()
        while True:
            worker.call("model", batch=batch)
            images += frames
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    finally:
        worker.close()
    return ModelRate(runtime, precision, batch, images / elapsed)
