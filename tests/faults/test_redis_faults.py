"""Redis faults survived by the stream consumers (issue 13, item 2), on a real
redis-server: a restart WITHOUT persistence mid-stream (the groups, the streams and the
scripts vanish), Redis at ``maxmemory`` refusing writes (OOM), and a Redis Cluster master
failover. The inference stream consumer runs for real (its batcher and decode pool, with
a stand-in detector of a known small capacity, so no TensorFlow): no thread dies,
publishing resumes by itself, and frames lost with the fault are counted, not silently
dropped. Each test is bounded (a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra.redisconn import connect
from services.inference.batcher import DynamicBatcher
from services.inference.config import InferenceSettings
from services.inference.consumer import StreamConsumer
from services.inference.metrics import InferenceMetrics
from tests.faults.test_poison import StandInDetector, frame_fields, results

pytestmark = [pytest.mark.timeout(90)]

LAYOUT = StreamLayout("facemask", 4)
CAMERAS = [f"cam{i}" for i in range(4)]


class Running:
    """A started StreamConsumer on ``url`` (and its batcher), stopped at the end."""

    def __init__(self, url: str, detector_delay: float, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "redis_url": url,
            "stream_partitions": LAYOUT.partitions,
            "metrics_port": 0,
            "port": 0,
            "max_batch_size": 8,
            "max_frame_age": 600.0,
            "claim_idle": 0.5,
            "claim_interval": 0.5,
            "consumer_name": "fault-test",
            "read_block": 0.05,
            "max_inflight": 24,
            **overrides,
        }
        self.settings = InferenceSettings(**values)
        self.detector = StandInDetector(detector_delay)
        self.batcher = DynamicBatcher(self.detector, max_batch_size=8)  # type: ignore[arg-type]
        self.client = connect(url, socket_timeout=2.0, connect_timeout=0.5)
        self.metrics = InferenceMetrics(CollectorRegistry())
        self.consumer = StreamConsumer(
            self.client, LAYOUT, self.batcher, self.metrics, self.settings
        )
        self.consumer.start()

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def published(self) -> float:
        return self.value("facemask_inference_requests_total", source="stream", outcome="ok")

    def close(self) -> None:
        self.consumer.stop(5.0)
        self.batcher.close(5.0)
        self.client.close()


@pytest.fixture()
def started() -> Iterator[list[Running]]:
    made: list[Running] = []
    yield made
    for running in made:
        running.close()


def push(client: Any, frames: int, start: int = 0) -> list[tuple[str, str]]:
    """``frames`` frames of every camera; returns (stream, id) of each."""
    out = []
    for n in range(start, start + frames):
        for camera in CAMERAS:
            key = LAYOUT.frames_for(camera)
            out.append((key, client.xadd(key, frame_fields(camera, n)).decode()))
    return out


def answered(client: Any) -> set[tuple[str, str]]:
    """The frame entries answered by a detections entry."""
    return set(results(client))


def test_redis_restarted_without_persistence_groups_recreated_losses_counted(
    tmp_path: Path, started: list[Running]
) -> None:
    server = RedisProcess(tmp_path / "redis", appendonly=False)  # and --save "": no persistence
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        # Capacity about 8 frames per 0.1 s; 24 in flight at a time.
        running = Running(server.url, detector_delay=0.1)
        started.append(running)
        first = push(client, 30)
        wait_until(lambda: running.published() >= 16, 20, "frames published before")
        assert running.consumer.inflight > 0  # frames in flight when Redis goes
        server.stop()
        server.start()  # empty: streams, groups, scripts gone
        # Every frame is gone (the reader may have created the empty streams again).
        assert all(client.xlen(key) == 0 for key in LAYOUT.all_frames())
        wait_until(
            lambda: (
                running.value("facemask_inference_frames_lost_total", reason="nogroup")
                + running.value("facemask_inference_frames_lost_total", reason="vanished")
                > 0
            ),
            20,
            "the frames whose pending entry vanished counted as lost",
        )
        second = push(client, 10, start=100)
        wait_until(lambda: set(second) <= answered(client), 20, "every frame after the restart")
        wait_until(lambda: running.consumer.inflight == 0, 10, "every slot free")
        lost = sum(
            running.value("facemask_inference_frames_lost_total", reason=r)
            for r in ("nogroup", "vanished")
        )
        published_before = running.published() - len(second)
        faults = {
            kind: running.value("facemask_inference_redis_faults_total", kind=kind)
            for kind in ("connection", "timeout", "nogroup", "noscript", "loading")
        }
        # Every frame of the first batch read before the restart was either published or
        # counted lost; frames never read vanished with Redis (not this service's to count).
        assert published_before + lost <= len(first)
        assert lost >= 1 and sum(faults.values()) >= 1, faults
        assert running.consumer.streams.groups_ready and not running.consumer.failed
        assert running.consumer.streams.worker.alive
        print(
            f"restart without persistence: {int(published_before)} published before, "
            f"{int(lost)} lost with the fault (counted), "
            f"{len(first) - int(published_before) - int(lost)} never read (gone with Redis), "
            f"{len(second)}/{len(second)} after; faults {faults}"
        )
    finally:
        client.close()
        server.stop()


def test_redis_at_maxmemory_backs_off_counts_and_resumes_when_memory_is_freed(
    redis_server: RedisProcess, redis_client: redis.Redis, started: list[Running]
) -> None:
    frames = push(redis_client, 10)
    running = Running(redis_server.url, detector_delay=0.5)  # the first batch takes 0.5 s
    started.append(running)
    wait_until(lambda: running.consumer.inflight >= 8, 10, "frames read")
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", str(used))  # noeviction: every XADD refused
    wait_until(
        lambda: running.value("facemask_inference_redis_faults_total", kind="oom") >= 3,
        20,
        "OOM replies counted (and retried with a back-off)",
    )
    assert answered(redis_client) == set()  # nothing published while Redis refuses
    assert running.consumer.inflight > 0 and not running.consumer.failed
    redis_client.config_set("maxmemory", "0")  # memory freed
    wait_until(lambda: answered(redis_client) == set(frames), 20, "every frame published")
    wait_until(lambda: running.consumer.inflight == 0, 10, "every slot free")
    assert running.published() == len(frames)
    assert running.value("facemask_inference_frames_lost_total", reason="nogroup") == 0
    assert not running.consumer.failed
    for key in LAYOUT.all_frames():
        assert redis_client.xpending(key, "inference")["pending"] == 0
