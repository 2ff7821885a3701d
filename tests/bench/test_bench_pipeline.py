"""Smoke test of ``python -m bench.bench_pipeline --quick``: the real services in child
processes, well-formed JSON and two PNG plots (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench

pytest.importorskip("matplotlib")


@pytest.mark.slow
@pytest.mark.model
def test_quick_pipeline_bench_writes_json_and_plots(tmp_path: Path) -> None:
    proc = run_quick_bench(
        "bench_pipeline",
        "--output-dir",
        str(tmp_path),
        drop_env=("FACEMASK_INF", "FACEMASK_AL"),
        timeout=180,
    )
    assert "largest K without skipped frames" in proc.stdout
    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert result["quick"] is True and result["frame_size"] == [1280, 720]
    assert [r["k"] for r in result["results"]] == [1, 2]
    for run in result["results"]:
        assert run["offered_per_s"] == pytest.approx(5.0 * run["k"])
        assert run["published"] > 0 and run["ok"] + run["skipped"] + run["lost"] == run["published"]
        for key in ("p50_ms", "p95_ms", "p99_ms", "mean_batch", "sustained_per_s"):
            assert run[key] is None or run[key] >= 0
        assert set(run["services"]) == {"inference", "alerts", "redis"}
        for stats in run["services"].values():
            assert stats["peak_rss_mib"] > 0 and stats["cpu_percent"] >= 0
    summary = result["summary"]
    for key in ("compute_limit_images_per_s", "upstream_loop_fps", "best_sustained_fps"):
        assert summary[key] > 0
    assert summary["ratio_to_upstream_loop"] == pytest.approx(
        summary["best_sustained_fps"] / summary["upstream_loop_fps"]
    )
    assert summary["largest_k_without_skips"] in (None, 1, 2)
    # the model-only rate of the variant the service runs, beside its sustained rate
    assert "service/model" in proc.stdout
    assert summary["model_variant"].partition("-")[0] in {"tensorflow", "tflite"}
    assert summary["model_only_images_per_s"] > 0 and summary["model_only_batch"] == 16
    assert summary["sustained_vs_model"] > 0
    assert summary["sustained_vs_model"] == pytest.approx(
        summary["best_sustained_fps"] / summary["model_only_images_per_s"]
    )
    assert result["machine"]["cpu_model"]
    for name in ("pipeline_throughput.png", "pipeline_p99.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert result["plots"] == ["pipeline_throughput.png", "pipeline_p99.png"]
