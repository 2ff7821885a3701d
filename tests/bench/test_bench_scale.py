"""``bench.bench_scale``: the capacity-plan arithmetic, the cost bookkeeping, the CPU pinning
of a child, and a ``--quick`` smoke run (real Redis, pinned inference replicas and the alert
service in child processes; structure, not figures)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_scale import (
    RedisCost,
    RedisSample,
    capacity_plan,
    pinned,
    process_cores,
    redis_cost,
    sum_costs,
)
from tests.bench import run_quick_bench


def test_capacity_plan_arithmetic() -> None:
    plan = capacity_plan(
        100.0,  # frames/s of one replica core
        200.0,  # Redis CPU us per frame
        120_000.0,  # Redis bytes in + out per frame
        replica_load=0.8,
        redis_budget=0.5,
        entry_bytes=64_000.0,
        retention_s=10.0,
        cameras=(100, 1_000, 10_000),
    )
    assert plan["cameras_per_replica_core"] == pytest.approx(16.0)  # 100 * 0.8 / 5
    assert plan["frames_per_s_per_master"] == pytest.approx(2500.0)  # 0.5 s / 200 us
    assert plan["cameras_per_master"] == pytest.approx(500.0)
    assert plan["replicas_per_master"] == pytest.approx(2500.0 / 80.0)
    rows = {row["cameras"]: row for row in plan["clusters"]}
    assert [rows[n]["replicas"] for n in (100, 1_000, 10_000)] == [7, 63, 625]
    assert [rows[n]["masters"] for n in (100, 1_000, 10_000)] == [1, 2, 20]
    # one Redis where one master does; else a cluster of three masters at least
    assert [rows[n]["cluster_masters"] for n in (100, 1_000, 10_000)] == [1, 3, 20]
    assert rows[10_000]["redis_cores"] == pytest.approx(10.0)  # 50,000 frames/s * 200 us
    assert rows[1_000]["redis_mbyte_per_s"] == pytest.approx(600.0)
    assert rows[100]["frame_memory_gb"] == pytest.approx(500 * 10 * 64_000 / 1e9)


def _sample(at: float, cpu: float, net_in: int, net_out: int, xadd: tuple[int, int]) -> RedisSample:
    return RedisSample(at, cpu, net_in, net_out, {"xadd": xadd, "ping": (3, 3)})


def test_redis_cost_is_the_difference_per_unit() -> None:
    cost = redis_cost(
        "ingest",
        _sample(10.0, 1.0, 1000, 50, (5, 100)),
        _sample(12.0, 1.5, 101_000, 250, (105, 3100)),
        100,
    )
    assert cost.cpu_us_per_unit == pytest.approx(5000.0)
    assert cost.in_bytes_per_unit == pytest.approx(1000.0)
    assert cost.out_bytes_per_unit == pytest.approx(2.0)
    assert cost.cpu_percent == pytest.approx(25.0)
    assert cost.commands == {"xadd": {"calls_per_unit": 1.0, "us_per_unit": 30.0}}  # ping idle
    assert math.isnan(
        redis_cost(
            "none", _sample(0, 0, 0, 0, (0, 0)), _sample(1, 1, 0, 0, (0, 0)), 0
        ).cpu_us_per_unit
    )


def test_sum_costs_weighs_each_measurement_by_its_units() -> None:
    a = RedisCost(
        "x", 100, 1.0, 0.01, 1000, 2000, {"xadd": {"calls_per_unit": 1.0, "us_per_unit": 10.0}}
    )
    b = RedisCost(
        "x", 300, 2.0, 0.01, 3000, 2000, {"xadd": {"calls_per_unit": 1.0, "us_per_unit": 30.0}}
    )
    total = sum_costs("x", [a, b])
    assert total.units == 400 and total.seconds == pytest.approx(3.0)
    assert total.cpu_us_per_unit == pytest.approx(50.0)
    assert total.in_bytes_per_unit == pytest.approx(10.0)
    assert total.commands["xadd"] == {"calls_per_unit": 1.0, "us_per_unit": pytest.approx(25.0)}


def test_a_child_started_while_pinned_runs_on_that_core_only() -> None:
    cores = sorted(os.sched_getaffinity(0))
    with pinned({cores[-1]}):
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
    try:
        assert os.sched_getaffinity(0) == set(cores)  # this thread got its affinity back
        assert process_cores(child.pid) == [cores[-1]]
    finally:
        child.communicate(b"")


@pytest.mark.slow
@pytest.mark.model
def test_quick_scale_bench_writes_the_results_json(tmp_path: Path) -> None:
    output = tmp_path / "scale.json"
    proc = run_quick_bench(
        "bench_scale",
        "--output",
        str(output),
        drop_env=("FACEMASK_INF", "FACEMASK_AL"),
        timeout=240,
    )
    assert "ratio" in proc.stdout and "plan:" in proc.stdout and "method: backlog" in proc.stdout
    result = json.loads(output.read_text())
    assert result["quick"] is True and result["frame_size"] == [1280, 720]
    cores = result["usable_cores"]
    rounds = result["rounds"]
    assert [r["replicas"] for r in rounds] == [1, 2]
    for run in rounds:
        assert run["rate"] > 0 and run["frames"] > 0 and run["skipped"] == 0
        assert len(run["per_replica_rate"]) == run["replicas"]
        assert sum(run["per_replica_rate"]) == pytest.approx(run["rate"])
        # every thread of replica i may run on one core only: cores[i] (shared if too few)
        assert run["replica_cores"] == [[cores[i % len(cores)]] for i in range(run["replicas"])]
        for variant in run["variants"]:
            assert variant["variant"].partition("-")[0] in {"tensorflow", "tflite"}
        # the backlog went in as JPEGs of about the mean frame size, and came out to the replicas
        frame_bytes = result["summary"]["frame_bytes_mean"]
        assert run["ingest"]["in_bytes_per_unit"] > frame_bytes
        # (read ahead of processing: up to max_inflight frames per replica are read before
        # a quick run's short window and processed in it, so fewer reads than frames here)
        assert run["inference"]["out_bytes_per_unit"] > 0.2 * frame_bytes
        # one publish-and-ack script call per partition per batch: never more than per frame
        assert 0 < run["inference"]["commands"]["evalsha"]["calls_per_unit"] <= 1.0
        assert run["memory"]["frames"]["entries"] == result["args"]["backlog"]
    summary = result["summary"]
    assert summary["ratio"] == pytest.approx(
        summary["two_replicas_fps"] / summary["one_replica_fps"]
    )
    redis = summary["redis"]
    assert set(redis) == {"ingest XADD", "inference drain", "alerts read"}
    assert redis["alerts read"]["units"] == rounds[-1]["memory"]["detections"]["entries"] > 0
    assert summary["redis_cpu_us_per_frame"] == pytest.approx(
        sum(p["cpu_us_per_unit"] for p in redis.values())
    )
    plan = summary["plan"]
    assert plan["cameras_per_replica_core"] == pytest.approx(summary["one_replica_fps"] * 0.8 / 5)
    assert [row["cameras"] for row in plan["clusters"]] == [100, 1_000, 10_000]
