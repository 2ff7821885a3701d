"""Smoke test of ``python -m bench.bench_train --quick``: a two-epoch training of a few
images, then the tables and well-formed JSON. Figures are not checked (they depend on the
machine and its load); only the structure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench


@pytest.mark.model
@pytest.mark.slow
def test_quick_bench_trains_and_writes_the_results_json(shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    output = tmp_path / "train.json"
    proc = run_quick_bench(
        "bench_train",
        "--out",
        str(tmp_path / "run"),
        "--output",
        str(output),
        extra_env={
            "FACEMASK_SHARED_DIR": str(shared_dir),
            "FACEMASK_MODEL_STORE": str(tmp_path / "store"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
    )
    assert "accuracy on the dev set" in proc.stdout and "no forgetting" in proc.stdout

    result = json.loads(output.read_text())
    assert result["benchmark"] == "train" and result["quick"] is True
    training = result["training"]
    assert training["epochs"] == 2 and training["wall_seconds"] > 0
    assert training["train_images_per_second"] > 0
    assert [row["epoch"] for row in result["curve"]] == [1, 2]
    models = [(row["model"], row["tiles"]) for row in result["accuracy"]]
    assert models == [("upstream", "off"), ("trained", "off"), ("trained int8", "off")]
    for row in result["accuracy"]:
        assert 0.0 <= row["ap50"] <= 1.0 and row["model_images_per_s"] > 0
        assert row["input_size"] == 260
    assert set(result["no_forgetting"]) == {"held_out_frames", "dev_images"}
    assert not (tmp_path / "store").exists()  # the benchmark does not register its model
