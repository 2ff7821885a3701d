"""The inference service logs and exports the model variant it runs (a fake runtime: no
TensorFlow, no Redis)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from facemask.model import variants as mv
from facemask.model.detector import Detector
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService
from tests.fixtures.model import ZeroRuntime


@pytest.fixture()
def service() -> Iterator[Any]:
    started: list[InferenceService] = []

    def start(selection: mv.Choice | None) -> InferenceService:
        runtime = ZeroRuntime("tflite", "int8")
        if selection is not None:
            runtime.selection = selection  # type: ignore[attr-defined]
        settings = InferenceSettings(
            host="127.0.0.1", port=0, metrics_port=0, streams=False, warmup=False
        )
        svc = InferenceService(settings, detector=Detector(runtime, model_version="abc-int8"))
        started.append(svc)
        svc.start()
        return svc

    yield start
    for svc in started:
        svc.stop()


def _choice(cached: bool) -> mv.Choice:
    measured = [
        mv.Measurement(mv.Variant("tensorflow", "bf16"), 223.0),
        mv.Measurement(mv.Variant("tflite", "int8"), 385.0),
    ]
    choice = mv.choose(measured, {"tensorflow-bf16": 0.0043, "tflite-int8": -0.0052})
    return mv.Choice(
        choice.variant, choice.images_per_second, choice.ap50_delta, choice.measurements,
        choice.rejected, cached=cached,
    )  # fmt: skip


@pytest.mark.parametrize(("cached", "chosen_by"), [(False, "measured"), (True, "cache")])
def test_service_logs_and_exports_the_measured_choice(
    service: Any, caplog: pytest.LogCaptureFixture, cached: bool, chosen_by: str
) -> None:
    with caplog.at_level(logging.INFO, logger="services.inference.service"):
        svc = service(_choice(cached))
    sample = svc.registry.get_sample_value
    labels = {"runtime": "tflite", "precision": "int8", "chosen_by": chosen_by}
    assert sample("facemask_model_variant_info", labels) == 1.0
    rate = "facemask_model_variant_images_per_second"
    assert sample(rate, {"variant": "tflite-int8"}) == 385.0
    assert sample(rate, {"variant": "tensorflow-bf16"}) == 223.0
    (record,) = [r for r in caplog.records if r.getMessage() == "model variant"]
    assert record.variant == "tflite-int8" and record.chosen_by == chosen_by  # type: ignore[attr-defined]
    assert record.measured == {"tensorflow-bf16": 223.0, "tflite-int8": 385.0}  # type: ignore[attr-defined]
    assert record.ap50_delta == -0.0052  # type: ignore[attr-defined]


def test_an_explicit_variant_is_exported_as_explicit(service: Any) -> None:
    svc = service(None)
    labels = {"runtime": "tflite", "precision": "int8", "chosen_by": "explicit"}
    assert svc.registry.get_sample_value("facemask_model_variant_info", labels) == 1.0


@pytest.mark.parametrize(
    ("settings", "runtime", "options"),
    [
        ({}, "auto", {"batch_size": 32, "interpreters": 1}),
        ({"max_batch_size": 16, "threads": 2}, "auto",
         {"batch_size": 16, "interpreters": 1, "threads": 2}),
        ({"precision": "bf16"}, "tensorflow", {"precision": "bf16"}),  # explicit wins
        ({"model_variant": "int8"}, "tflite", {"variant": "int8", "interpreters": 1}),
        ({"runtime": "tensorflow"}, "tensorflow", {"precision": "auto"}),
        ({"runtime": "tflite"}, "tflite", {"interpreters": 1}),
    ],
)  # fmt: skip
def test_settings_choose_auto_unless_told(
    settings: dict[str, Any], runtime: str, options: dict[str, Any]
) -> None:
    config = InferenceSettings(**settings)
    assert config.effective_runtime == runtime
    assert config.runtime_options() == options
    assert config.runtime_config().type == runtime


def test_settings_reject_precision_and_variant_together() -> None:
    with pytest.raises(ValueError, match="model_variant applies to the tflite runtime only"):
        InferenceSettings(precision="bf16", model_variant="int8")
