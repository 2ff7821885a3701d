"""Smoke test of ``python -m bench.bench_model --quick``: it runs and writes well-formed JSON.

Timings are not checked (they depend on the machine and its load); only the structure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO_ROOT

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
    from facemask import modelstore

    try:
        modelstore.artifact_path("face_mask_detection.pb")
    except modelstore.ModelStoreError as exc:
        pytest.skip(str(exc))
    output = tmp_path / "model.json"
    env = {**os.environ, "FACEMASK_SHARED_DIR": str(shared_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_model", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
    assert set(targets) == {"model_fraction_of_compute_limit", "end_to_end_speedup_vs_upstream"}
    for target in targets.values():
        assert isinstance(target["met"], bool)
        assert target["met"] == (target["value"] >= target["target"])
