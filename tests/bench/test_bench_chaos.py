"""Smoke test of ``python -m bench.bench_chaos --quick``: the real pipeline under a few
faults; the benchmark exits non-zero when a frame is lost, a long stall goes unnoticed or a
service outgrows its deploy memory limit, so this also checks those goals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_quick_bench


@pytest.mark.slow
@pytest.mark.model
def test_quick_chaos_bench_loses_nothing_and_accounts_for_every_frame(tmp_path: Path) -> None:
    proc = run_quick_bench(
        "bench_chaos",
        "--faults",
        "poison,redis_restart,redis_wipe",
        "--output-dir",
        str(tmp_path),
        drop_env=("FACEMASK_INF", "FACEMASK_AL"),
        timeout=300,
    )
    assert "lost 0;" in proc.stdout
    result = json.loads((tmp_path / "chaos.json").read_text())
    assert [f["name"] for f in result["faults"]] and result["quick"] is True
    assert {f["name"] for f in result["faults"]} == {"poison", "redis_restart", "redis_wipe"}
    totals = result["totals"]
    resolved = totals["processed"] + totals["skipped"] + totals["deadlettered"]
    assert totals["offered"] == resolved + totals["destroyed"] + totals["lost"]
    assert totals["lost"] == 0 and totals["processed"] > 0
    # every poison entry that Redis kept is dead-lettered with a reason, none is run
    assert totals["poison_frames"] > 0 and totals["poison_detections"] > 0
    assert totals["poison_frames_deadlettered"] == totals["poison_frames"]
    assert totals["poison_detections_deadlettered"] == totals["poison_detections"]
    assert result["goals"] == {
        "lost_zero": True,
        "stalls_detected_within_10s": True,
        "rss_under_limits": True,
    }
    assert set(result["peak_rss_mib"]) == {"inference", "alerts", "redis"}
    assert result["limits_mib"]["alerts"] > 0 and result["limits_mib"]["inference"] > 0
