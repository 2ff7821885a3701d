"""The inference stream consumer's use of the shared consumer-group machinery, without a
model: a frame delivered too often is dead-lettered through the publish-and-ack script, and
the reader survives its consumer group being deleted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import cv2
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.core.preprocess import INPUT_SIZE
from facemask.core.types import Detections
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra.redisconn import connect
from services.inference.batcher import DynamicBatcher, Job, JobResult
from services.inference.config import InferenceSettings
from services.inference.consumer import Outcome, StreamConsumer
from services.inference.metrics import InferenceMetrics

LAYOUT = StreamLayout("facemask", 2)
GROUP = "inference"


class FakeBatcher:
    """Answers every job at once with an empty result."""

    model_version = "test"

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> Future[JobResult]:
        self.jobs.append(job)
        future: Future[JobResult] = Future()
        future.set_result(JobResult(Detections.empty(), 8, 8, model_runs=1))
        return future


@pytest.fixture()
def consumer(redis_server: RedisProcess) -> Iterator[tuple[StreamConsumer, FakeBatcher]]:
    settings = InferenceSettings(
        redis_url=redis_server.url,
        stream_partitions=LAYOUT.partitions,
        metrics_port=0,
        port=0,
        max_batch_size=4,
        max_frame_age=600.0,
        claim_idle=0.1,
        claim_interval=0.1,
        max_deliveries=5,
        consumer_name="survivor",
    )
    batcher = FakeBatcher()
    client = connect(redis_server.url)
    metrics = InferenceMetrics(CollectorRegistry())
    stream_consumer = StreamConsumer(client, LAYOUT, batcher, metrics, settings)  # type: ignore[arg-type]
    yield stream_consumer, batcher
    stream_consumer.stop(5.0)
    client.close()


def push(client: redis.Redis, frame_id: int, camera: str = "cam") -> str:
    entry = FrameEntry(camera, frame_id, time.time(), "jpeg", 8, 8, b"\xff\xd8 not decoded")
    return client.xadd(LAYOUT.frames_for(camera), entry.to_fields()).decode()  # type: ignore[arg-type]


def detections(client: redis.Redis) -> list[DetectionsEntry]:
    return [
        DetectionsEntry.from_fields(fields)
        for key in LAYOUT.all_detections()
        for _sid, fields in client.xrange(key)
    ]


def metric(stream_consumer: StreamConsumer, name: str, labels: dict[str, str]) -> float:
    return stream_consumer.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_frame_delivered_max_deliveries_times_is_dead_lettered(
    redis_client: redis.Redis, consumer: tuple[StreamConsumer, FakeBatcher]
) -> None:
    stream_consumer, batcher = consumer
    key = LAYOUT.frames_for("cam")
    for k in LAYOUT.all_frames():
        redis_client.xgroup_create(k, GROUP, id="0", mkstream=True)
    sid = push(redis_client, 1)
    redis_client.xreadgroup(GROUP, "crashed", {key: ">"})
    # Four more consumers crashed on it: five deliveries, none finished.
    redis_client.xclaim(key, GROUP, "crashed", 0, [sid], retrycount=5)
    stream_consumer.start()
    deadletter = LAYOUT.deadletter(LAYOUT.partition_of("cam"))
    wait_until(lambda: redis_client.xlen(deadletter) == 1, 10, "the dead letter")
    ((_id, fields),) = redis_client.xrange(deadletter)
    assert fields[b"reason"] == b"max_deliveries" and fields[b"sid"].decode() == sid
    assert fields[b"error"] == b"delivered 5 times without a result"
    assert fields[b"camera"] == b"cam" and fields[b"stream"].decode() == key
    wait_until(lambda: redis_client.xpending(key, GROUP)["pending"] == 0, 5, "the ack")
    assert batcher.jobs == [] and detections(redis_client) == []
    labels = {"reason": "max_deliveries"}
    assert metric(stream_consumer, "facemask_inference_deadletter_total", labels) == 1
    # A frame below the limit is run as usual.
    push(redis_client, 2)
    wait_until(lambda: len(detections(redis_client)) == 1, 10, "the next frame's entry")
    assert [e.frame_id for e in detections(redis_client)] == [2]


def test_the_reader_creates_the_group_again_after_it_was_deleted(
    redis_client: redis.Redis, consumer: tuple[StreamConsumer, FakeBatcher]
) -> None:
    stream_consumer, _batcher = consumer
    stream_consumer.start()
    push(redis_client, 1)
    wait_until(lambda: len(detections(redis_client)) == 1, 10, "the first entry")
    for key in LAYOUT.all_frames():
        redis_client.xgroup_destroy(key, GROUP)
    push(redis_client, 2)
    wait_until(
        lambda: 2 in {e.frame_id for e in detections(redis_client)}, 10, "the entry after NOGROUP"
    )
    assert stream_consumer.streams.groups_ready and not stream_consumer.failed
    wait_until(lambda: stream_consumer.inflight == 0, 5, "every frame published")


def test_a_frame_already_too_old_when_read_is_skipped_without_decoding(
    redis_client: redis.Redis, consumer: tuple[StreamConsumer, FakeBatcher]
) -> None:
    stream_consumer, batcher = consumer
    old = FrameEntry("cam", 1, time.time() - 601.0, "jpeg", 8, 8, b"\xff\xd8 not decoded")
    redis_client.xadd(LAYOUT.frames_for("cam"), old.to_fields())  # type: ignore[arg-type]
    push(redis_client, 2)  # fresh: run as usual
    stream_consumer.start()
    wait_until(lambda: len(detections(redis_client)) == 2, 10, "both entries")
    by_frame = {e.frame_id: e for e in detections(redis_client)}
    assert (by_frame[1].status, by_frame[1].reason) == ("skipped", "too_old")
    assert by_frame[2].status == "ok"
    assert [job.capture_ts for job in batcher.jobs] == [pytest.approx(time.time(), abs=60)]
    wait_until(lambda: stream_consumer.inflight == 0, 5, "every frame published")


class GatedDetector:
    """No faces; after ``limit`` images it holds the next batch until ``release``."""

    runtime = None
    input_size = INPUT_SIZE

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.images = 0
        self.held = threading.Event()
        self.gate = threading.Event()

    def infer(self, tensors: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.images >= self.limit:
            self.held.set()
            self.gate.wait(30)
        n = len(tensors)
        self.images += n
        return np.zeros((n, 1, 4), np.float32), np.zeros((n, 1, 2), np.float32)

    def postprocess(self, loc: Any, cls: Any, *, conf: float, iou: float) -> Detections:
        return Detections.empty()


def cameras_per_partition(layout: StreamLayout, per: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {p: [] for p in range(layout.partitions)}
    n = 0
    while any(len(c) < per for c in out.values()):
        name = f"cam-{n}"
        n += 1
        if len(out[layout.partition_of(name)]) < per:
            out[layout.partition_of(name)].append(name)
    return out


def test_overload_is_shared_fairly_by_every_partition_and_camera(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    """4 partitions x 2 cameras, a backlog of 60 frames per camera (480), the model lets
    64 images through, then holds: the 64 frames processed are shared by the cameras
    within 25 % of the mean (8 each). Reading the streams in key order with COUNT room
    each gave the first partition all of them."""
    layout = StreamLayout("facemask", 4)
    per_partition = cameras_per_partition(layout, 2)
    cameras = [c for p in sorted(per_partition) for c in per_partition[p]]
    data = cv2.imencode(".jpg", np.full((48, 64, 3), 99, np.uint8))[1].tobytes()
    for n in range(60):  # cameras send at the same rate: interleaved in time
        pipe = redis_client.pipeline(transaction=False)
        for camera in cameras:
            entry = FrameEntry(camera, n, time.time(), "jpeg", 64, 48, data)
            pipe.xadd(layout.frames_for(camera), entry.to_fields())  # type: ignore[arg-type]
        pipe.execute()
    settings = InferenceSettings(
        redis_url=redis_server.url,
        stream_partitions=layout.partitions,
        metrics_port=0,
        port=0,
        max_batch_size=8,
        max_frame_age=600.0,
        read_count=96,
        max_inflight=96,
        consumer_name="fair",
    )
    detector = GatedDetector(limit=64)
    batcher = DynamicBatcher(detector, max_batch_size=8, decode_workers=1)  # type: ignore[arg-type]
    client = connect(redis_server.url)
    metrics = InferenceMetrics(CollectorRegistry())
    stream_consumer = StreamConsumer(client, layout, batcher, metrics, settings)
    stream_consumer.start()
    try:
        ok = {"source": "stream", "outcome": "ok"}

        def quiet() -> bool:  # the gate holds a batch and all before it are published
            published = metrics.registry.get_sample_value("facemask_inference_requests_total", ok)
            return detector.held.is_set() and published == detector.images

        wait_until(quiet, 20, "the first images processed, the next held")
        shares = {c: 0 for c in cameras}
        for partition in range(layout.partitions):
            for _sid, fields in redis_client.xrange(layout.detections(partition)):
                shares[DetectionsEntry.from_fields(fields).camera_id] += 1
        mean = sum(shares.values()) / len(cameras)
        assert sum(shares.values()) >= 64
        assert all(abs(n - mean) <= 0.25 * mean for n in shares.values()), shares
        print("processed per camera under overload:", shares)
    finally:
        detector.gate.set()
        stream_consumer.stop(5.0)
        batcher.close(5.0)
        client.close()


def _outcome(stream_consumer: StreamConsumer, camera: str, sid: str, frame_id: int) -> Outcome:
    """The outcome the consumer queues for a frame it ran (an empty result)."""
    frame = FrameEntry(camera, frame_id, time.time(), "jpeg", 8, 8, b"\xff\xd8 not decoded")
    future: Future[JobResult] = Future()
    future.set_result(JobResult(Detections.empty(), 8, 8, model_runs=1))
    stream_consumer._result(LAYOUT.frames_for(camera), sid, frame, future)
    return stream_consumer._outbox.get_nowait()


def _evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))  # type: ignore[union-attr]


def _read_all(client: redis.Redis, consumer: str) -> None:
    for key in LAYOUT.all_frames():
        client.xreadgroup(GROUP, consumer, {key: ">"})


def test_a_batch_is_one_script_call_per_partition_and_skips_frames_taken_over(
    redis_client: redis.Redis, consumer: tuple[StreamConsumer, FakeBatcher]
) -> None:
    """Eight frames over both partitions and a dead letter, published in one batch: one
    script call per partition; the three frames another consumer took over meanwhile are
    left to it (no entry, still pending there), every other one is published once and
    acknowledged. Published again (a retry), nothing is added."""
    stream_consumer, _batcher = consumer
    for key in LAYOUT.all_frames():
        redis_client.xgroup_create(key, GROUP, id="0", mkstream=True)
    cameras = [c for cams in cameras_per_partition(LAYOUT, 2).values() for c in cams]
    sids = {(c, n): push(redis_client, n, c) for n in (1, 2) for c in cameras}
    poison = push(redis_client, 3, cameras[0])
    _read_all(redis_client, "survivor")
    taken = [(cameras[0], 1), (cameras[2], 1), (cameras[3], 2)]
    for camera, n in taken:
        redis_client.xclaim(LAYOUT.frames_for(camera), GROUP, "other", 0, [sids[camera, n]])
    outcomes = [_outcome(stream_consumer, c, sid, n) for (c, n), sid in sids.items()]
    stream_consumer._deadletter(LAYOUT.frames_for(cameras[0]), poison, {}, "corrupt_image", "x")
    outcomes.append(stream_consumer._outbox.get_nowait())
    redis_client.config_resetstat()

    stream_consumer._publish(outcomes)

    assert _evalsha_calls(redis_client) == LAYOUT.partitions
    published = sorted((e.camera_id, e.frame_id) for e in detections(redis_client))
    assert published == sorted(set(sids) - set(taken))
    deadletter = LAYOUT.deadletter(LAYOUT.partition_of(cameras[0]))
    assert [f[b"sid"].decode() for _id, f in redis_client.xrange(deadletter)] == [poison]
    for (camera, n), sid in sids.items():
        pending = redis_client.xpending_range(LAYOUT.frames_for(camera), GROUP, sid, sid, 1)
        owner = [p["consumer"].decode() for p in pending]
        assert owner == (["other"] if (camera, n) in taken else [])
    labels: dict[str, str] = {}
    assert metric(stream_consumer, "facemask_inference_duplicates_suppressed_total", labels) == 3

    stream_consumer._publish(outcomes)  # again: every frame is acked or someone else's
    assert len(detections(redis_client)) == len(sids) - len(taken)
    assert redis_client.xlen(deadletter) == 1
    assert (
        metric(stream_consumer, "facemask_inference_duplicates_suppressed_total", labels) == 3 + 9
    )


def test_an_outcome_redis_refuses_fails_alone_within_its_partition_call(
    redis_client: redis.Redis, consumer: tuple[StreamConsumer, FakeBatcher]
) -> None:
    """Partition 0's detections stream is not a stream: its frames' XADD fails (a strike
    each, the frames stay pending), while the same call publishes partition 0's dead
    letter and the other call partition 1's frames."""
    stream_consumer, _batcher = consumer
    for key in LAYOUT.all_frames():
        redis_client.xgroup_create(key, GROUP, id="0", mkstream=True)
    by_partition = cameras_per_partition(LAYOUT, 1)
    broken, fine = by_partition[0][0], by_partition[1][0]
    redis_client.set(LAYOUT.detections(0), "not a stream")
    sids = {(c, n): push(redis_client, n, c) for n in (1, 2) for c in (broken, fine)}
    poison = push(redis_client, 3, broken)
    _read_all(redis_client, "survivor")
    outcomes = [_outcome(stream_consumer, c, sid, n) for (c, n), sid in sids.items()]
    stream_consumer._deadletter(LAYOUT.frames_for(broken), poison, {}, "corrupt_image", "x")
    outcomes.append(stream_consumer._outbox.get_nowait())
    redis_client.config_resetstat()

    stream_consumer._publish(outcomes)

    assert _evalsha_calls(redis_client) == LAYOUT.partitions
    published = [(e.camera_id, e.frame_id) for e in detections_of(redis_client, 1)]
    assert sorted(published) == [(fine, 1), (fine, 2)]
    assert redis_client.xlen(LAYOUT.deadletter(0)) == 1
    pending = redis_client.xpending_range(LAYOUT.frames_for(broken), GROUP, "-", "+", 10)
    assert sorted(p["message_id"].decode() for p in pending) == sorted(
        sids[broken, n] for n in (1, 2)
    )
    assert all(
        stream_consumer.streams.failing(o.delivery()) for o in outcomes[:4] if o.camera_id == broken
    )
    assert not stream_consumer.failed


def detections_of(client: redis.Redis, partition: int) -> list[DetectionsEntry]:
    return [
        DetectionsEntry.from_fields(f) for _sid, f in client.xrange(LAYOUT.detections(partition))
    ]
