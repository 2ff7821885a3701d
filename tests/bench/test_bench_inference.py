"""Smoke test of ``python -m bench.bench_inference --quick``: the real service in a child
process against a real Redis, well-formed JSON (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench


@pytest.mark.slow
@pytest.mark.model
def test_quick_inference_bench_writes_the_results_json(tmp_path: Path) -> None:
    output = tmp_path / "inference.json"
    proc = run_quick_bench("bench_inference", "--output", str(output), drop_env=("FACEMASK_INF",))
    assert "frames/s" in proc.stdout and "summary:" in proc.stdout
    result = json.loads(output.read_text())
    assert result["quick"] is True and result["frame_size"] == [640, 480]
    runs = {r["name"]: r for r in result["results"]}
    expected = {
        "per-frame loop (upstream)",
        "dynamic grpc c=1",
        "dynamic grpc c=4",
        "dynamic stream K=4@5fps",
        "batch1 grpc c=1",
        "batch1 stream K=4@5fps",
    }
    assert expected <= set(runs)
    assert any(name.startswith("dynamic saturation stream") for name in runs)
    assert any(name.startswith("dynamic 80% stream") for name in runs)
    for run in runs.values():
        assert run["frames_per_s"] > 0 and run["frames"] > 0
        assert run["p50_ms"] <= run["p99_ms"]
    # four concurrent gRPC clients make batches; the batch-1 configuration never does
    assert runs["dynamic grpc c=4"]["mean_batch"] > 1.0
    assert runs["batch1 grpc c=1"]["mean_batch"] == pytest.approx(1.0)
    summary = result["summary"]
    assert summary["compute_limit_images_per_s"] > 0 and summary["per_frame_loop_fps"] > 0
    assert summary["sustained_fraction_of_limit"] == pytest.approx(
        summary["sustained_stream_fps"] / summary["compute_limit_images_per_s"]
    )
    assert summary["targets"] == {"fraction_of_limit": 0.7, "vs_loop": 1.6, "p99_ms_at_80pct": 250}
    # the model-only rate of the variant the service runs, beside its sustained rate
    assert "service/model" in proc.stdout
    assert summary["model_variant"] in {
        "tensorflow-float32",
        "tensorflow-bf16",
        "tflite-float32",
        "tflite-int8",
    }
    assert summary["model_only_images_per_s"] > 0 and summary["model_only_batch"] == 32
    assert summary["sustained_vs_model"] > 0
    assert summary["sustained_vs_model"] == pytest.approx(
        summary["sustained_stream_fps"] / summary["model_only_images_per_s"]
    )
