"""``bench.bench_memory``: the deploy limits it reads, and a ``--quick`` smoke run (real
Redis, inference and alert services in child processes; structure, not figures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_memory import _largest_grid, lying_jpeg
from bench.common import deploy_limits, parse_quantity
from facemask.core.preprocess import jpeg_size
from tests.bench import run_quick_bench

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("512Mi", 512 * MIB), ("4Gi", 4096 * MIB), ("1G", 10**9), ("128974848", 128974848)],
)
def test_parse_quantity(text: str, nbytes: int) -> None:
    assert parse_quantity(text) == nbytes


@pytest.mark.parametrize("text", ["", "lots", "5Xi", "-1Gi"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="memory quantity"):
        parse_quantity(text)


def test_deploy_limits_come_from_both_deploy_files() -> None:
    limits = deploy_limits()
    for name in ("inference", "alerts"):
        sources = limits[name]["sources"]
        assert "docker-compose.yml" in sources
        assert f"deploy/k8s/base/{name}/deployment.yaml" in sources
        assert limits[name]["limit"] == min(sources.values()) > 0
    assert limits["alerts"]["limit"] <= 512 * MIB  # the container limit


def test_bench_inputs() -> None:
    assert jpeg_size(lying_jpeg(16000, 16000)) == (16000, 16000)
    assert len(lying_jpeg(16000, 16000)) < 5000
    assert _largest_grid(16) == (4, 4) and _largest_grid(64) == (8, 8)
    assert _largest_grid(5) == (1, 5) and _largest_grid(1) == (1, 1)


@pytest.mark.slow
@pytest.mark.model
def test_quick_memory_bench(tmp_path: Path) -> None:
    output = tmp_path / "memory.json"
    proc = run_quick_bench(
        "bench_memory",
        "--output",
        str(output),
        drop_env=("FACEMASK_INF", "FACEMASK_AL"),
        timeout=240,
    )
    assert "peak MiB" in proc.stdout and "PASS" in proc.stdout
    result = json.loads(output.read_text())
    assert result["quick"] is True and result["tile_grid"] == [4, 4]
    for name in ("inference", "alerts"):
        stats = result["services"][name]
        assert stats["pass"] is True and stats["limit_bytes"] > 0
        assert 0 < stats["idle_rss_bytes"] <= stats["peak_rss_bytes"] < stats["limit_bytes"]
        assert set(stats["peak_by_phase"]) == {
            "idle", "grpc-max-tiles", "grpc-bombs", "stream-bombs", "dashboard",
        }  # fmt: skip
    outcomes = result["outcomes"]
    # the 256-image max-tile request can never fit: refused, never run
    assert outcomes["grpc-max-tiles"]["RESOURCE_EXHAUSTED"] > 0
    # bombs and malformed messages are bad requests, never an internal error
    assert outcomes["grpc-bombs"]["INVALID_ARGUMENT"] > 0
    for phase in ("grpc-max-tiles", "grpc-bombs"):
        assert not {"INTERNAL", "UNKNOWN", "UNAVAILABLE"} & set(outcomes[phase])
    # honest cameras get a picture; lying ones none (404), never a server error
    dashboard = outcomes["dashboard"]
    assert dashboard["200"] > 0 and dashboard["404"] > 0
    assert set(dashboard) <= {"200", "404"}
    requests = result["inference_requests"]
    assert requests["too_large"] > 0 and requests["invalid"] > 0
    assert result["alerts_latest_renders"] >= 1
