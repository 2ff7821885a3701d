"""The model-only comparison of the benchmarks, without a model: which worker config a
service's variant maps to, and the summary fields."""

from __future__ import annotations

import pytest

from bench.bench_inference import model_summary
from bench.model_rate import ModelRate, worker_config


@pytest.mark.parametrize(
    ("runtime", "precision", "env", "config"),
    [
        ("tensorflow", "bf16", {}, {"runtime": "tensorflow", "precision": "bf16"}),
        ("tensorflow", "float32", {}, {"runtime": "tensorflow", "precision": "float32"}),
        ("tflite", "int8", {}, {"runtime": "tflite", "variant": "int8"}),
        ("tflite", "float32", {}, {"runtime": "tflite", "variant": "float32"}),  # auto's pick
        ("tflite", "float32", {"FACEMASK_INFERENCE_RUNTIME": "tflite"},
         {"runtime": "tflite", "variant": "upstream"}),
        ("tflite", "float32", {"FACEMASK_INFERENCE_MODEL_VARIANT": "float32"},
         {"runtime": "tflite", "variant": "float32"}),
        ("tflite", "int8",
         {"FACEMASK_INFERENCE_INTERPRETERS": "2", "FACEMASK_INFERENCE_THREADS": "1"},
         {"runtime": "tflite", "variant": "int8", "interpreters": 2, "num_threads": 1}),
    ],
)  # fmt: skip
def test_worker_config_of_the_service_variant(
    runtime: str, precision: str, env: dict[str, str], config: dict[str, object]
) -> None:
    assert worker_config(runtime, precision, env) == config


def test_worker_config_rejects_an_unknown_runtime() -> None:
    with pytest.raises(ValueError):
        worker_config("onnx", "float32", {})


def test_model_summary_fields() -> None:
    summary = model_summary(ModelRate("tflite", "int8", 32, 385.0), 192.5)
    assert summary == {
        "model_variant": "tflite-int8",
        "model_only_images_per_s": 385.0,
        "model_only_batch": 32,
        "sustained_vs_model": 0.5,
    }
