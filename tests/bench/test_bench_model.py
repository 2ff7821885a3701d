"""Smoke test of ``python -m bench.bench_model --quick``: it runs and writes well-formed JSON.

Timings are not checked (they depend on the machine and its load); only the structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench

BATCHES = [1, 4, 8, 16, 32, 64]
ROW_KEYS = {
    "section",
    "config",
    "batch",
    "images_per_s",
    "images_per_s_median",
    "fraction_of_compute_limit",
    "ratio_vs_upstream",
    "baseline",
    "timing",
}


@pytest.mark.model
@pytest.mark.slow
def test_quick_bench_writes_the_results_json(shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from facemask.model import store as modelstore

    try:
        modelstore.artifact_path("face_mask_detection.pb")
    except modelstore.ModelStoreError as exc:
        pytest.skip(str(exc))
    output = tmp_path / "model.json"
    proc = run_quick_bench(
        "bench_model",
        "--output",
        str(output),
        extra_env={"FACEMASK_SHARED_DIR": str(shared_dir), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert "images/s" in proc.stdout and "of compute limit" in proc.stdout

    result = json.loads(output.read_text())
    assert result["benchmark"] == "model"
    assert result["quick"] is True
    machine = result["machine"]
    assert machine["cpu_model"] and machine["tensorflow"]
    assert machine["threads"] == result["settings"]["threads"] >= 1
    assert result["matmul"]["threads"] == result["settings"]["threads"]
    assert result["matmul"]["gflops"] > 0
    assert result["compute_limit_images_per_s"] == pytest.approx(result["matmul"]["gflops"] / 1.52)

    rows = result["rows"]
    assert all(set(row) == ROW_KEYS for row in rows)
    by_section: dict[str, list[dict]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert set(by_section) == {"model", "decoded", "end-to-end"}
    model = {row["config"]: row for row in by_section["model"]}
    assert "upstream session.run" in model
    assert [model[f"tensorflow b{b}"]["batch"] for b in BATCHES] == BATCHES
    e2e = {row["config"] for row in by_section["end-to-end"]}
    assert {"upstream loop (decode full)", "project default (decode auto, pool, b32)"} <= e2e
    for section, section_rows in by_section.items():
        baseline = section_rows[0]
        assert baseline["ratio_vs_upstream"] == pytest.approx(1.0), section
        for row in section_rows:
            assert row["baseline"] == baseline["config"]
            assert row["images_per_s"] > 0
            assert row["ratio_vs_upstream"] == pytest.approx(
                row["images_per_s"] / baseline["images_per_s"]
            )
            assert row["fraction_of_compute_limit"] == pytest.approx(
                row["images_per_s"] / result["compute_limit_images_per_s"]
            )
            assert row["timing"]["rounds"] == result["settings"]["rounds"]
    if "tflite" in result["settings"]["runtimes"]:
        assert "tflite b1" in model

    decode = result["decode"]
    assert decode["full"]["ms_per_frame"] > 0 and decode["auto"]["ms_per_frame"] > 0
    assert decode["auto"]["decoded_size"] == [640, 360]  # 1280x720 at 1/2 (1/4 is < 260 px)
    assert result["frames"]["size"] == [1280, 720]
    targets = result["targets"]
    assert {
        "cli_default_model_fraction_of_compute_limit",
        "service_default_model_fraction_of_compute_limit",
        "cli_default_end_to_end_speedup_vs_upstream",
        "service_default_end_to_end_speedup_vs_upstream",
    } <= set(targets)
    for target in targets.values():
        assert isinstance(target["met"], bool)
        if "ap50_drop_vs_float32" not in target:
            assert target["met"] == (target["value"] >= target["target"])
    assert targets["cli_default_model_fraction_of_compute_limit"]["config"] == "tensorflow b32"

    # bf16 runs in a worker process where the CPU has native bf16; tiles cost model runs
    from facemask.model.runtime.base import native_bf16

    decoded = {row["config"] for row in by_section["decoded"]}
    assert "detector.detect tiles 2x2" in decoded
    if native_bf16():
        assert {"tensorflow bf16 b32", "tensorflow bf16 b64"} <= set(model)
        assert "tensorflow bf16 detect tiles 2x2" in decoded
        service = targets["service_default_model_fraction_of_compute_limit"]
        assert service["config"] == "tensorflow bf16 b32"
    # dev-set accuracy beside each runtime / precision (a few images in the smoke run)
    accuracy = {row["config"]: row for row in result["accuracy"]}
    assert {"tensorflow float32", "tensorflow float32 tiles 2x2"} <= set(accuracy)
    for row in accuracy.values():
        assert row["images"] == 6
        assert 0.0 <= row["AP50"] <= 1.0 and 0.0 <= row["AP50_unrounded"] <= 1.0
    assert accuracy["tensorflow float32"]["detect_vs_float32"] == pytest.approx(1.0)
