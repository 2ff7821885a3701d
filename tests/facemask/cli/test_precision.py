"""bf16 (TensorFlow's oneDNN mixed precision): close to the reference, AP50 within 0.01.

bf16 is a process-wide TensorFlow option and this test process runs the float32 model, so
these run ``facemask`` in child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facemask.core.types import LABELS
from tests.fixtures.paths import REPO_ROOT, require

pytestmark = [pytest.mark.model, pytest.mark.slow]

DEV = Path("data") / "facemask-dev"


def _facemask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facemask", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bf16_detect_stays_close_to_the_reference(samples_dir: Path, reference_dir: Path) -> None:
    reference = json.loads((reference_dir / "aizoo_detections.json").read_text())["images"]
    result = _facemask("detect", "--no-progress", "--precision", "bf16", str(samples_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        expected = reference[f"img/{Path(line['source']).name}"]["detections"]
        found: list[dict[str, Any]] = sorted(line["detections"], key=lambda d: d["box"])
        wanted = sorted(expected, key=lambda d: d["box_xyxy"])
        assert len(found) == len(wanted), line
        for got, ref in zip(found, wanted, strict=True):
            # Same faces and labels; bf16 moves scores by up to ~0.01 (float32: 1e-3).
            assert got["label"] == LABELS[ref["class_id"]]
            assert abs(got["score"] - ref["conf"]) <= 0.02
            assert max(abs(a - b) for a, b in zip(got["box"], ref["box_xyxy"], strict=True)) <= 2


def test_bf16_dev_set_ap50_within_001_of_float32(shared_dir: Path) -> None:
    require(shared_dir / DEV / "annotations.json", "dev set")
    result = _facemask(
        "eval",
        "--annotations",
        str(shared_dir / DEV / "annotations.json"),
        "--images",
        str(shared_dir / DEV / "images"),
        "--json",
        "--precision",
        "bf16",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    # float32 (= the reference): AP50 0.4198, AP 0.1289; the rule for a default: AP50 +- 0.01.
    assert abs(metrics["AP50"] - 0.4198) <= 0.01
    assert abs(metrics["AP"] - 0.1289) <= 0.01
