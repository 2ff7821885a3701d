"""Smoke test of ``python -m bench.bench_ingest --quick``: it runs the real node in child
processes and writes well-formed JSON with plausible figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench


@pytest.mark.slow
def test_quick_bench_writes_the_results_json(tmp_path: Path) -> None:
    output = tmp_path / "ingest.json"
    proc = run_quick_bench(
        "bench_ingest", "--output", str(output), drop_env=("FACEMASK_INGEST_",), timeout=180
    )
    assert "cpu ms/frame" in proc.stdout and "peak RSS MiB" in proc.stdout
    result = json.loads(output.read_text())
    assert result["benchmark"] == "ingest" and result["quick"] is True
    assert (result["source"]["width"], result["source"]["height"]) == (1280, 720)
    configs = {c["fps_target"]: c for c in result["configs"]}
    assert set(configs) == {5, 15}
    for fps, config in configs.items():
        assert config["exit_code"] == 0
        assert config["fps_achieved"] == pytest.approx(fps, rel=0.25)
        assert config["cpu_ms_per_frame"] > 0 and config["cpu_percent_of_one_core"] > 0
        assert 0 < config["encode_ms_mean"] < 1000
        assert 5_000 < config["jpeg_bytes_per_frame"] < 1_000_000
        assert config["jpeg_quality"] == 80
        assert 20 < config["peak_rss_mib"] < 2048
        assert config["dropped"]["rate_cap"] > 0  # 30 fps source, frames dropped at the source
        assert config["dropped"]["buffer_full"] == 0
    sizes = result["jpeg_bytes_by_quality"]
    assert sizes["60"] < sizes["80"] < sizes["90"]
