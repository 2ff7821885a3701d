"""The Redis Streams path: real redis-server, real model, in-process and child services."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService

pytestmark = pytest.mark.model

LAYOUT = StreamLayout("facemask", 4)


@pytest.fixture(scope="module")
def jpeg(shared_dir: Path) -> tuple[bytes, int, int]:
    data = (shared_dir / "data" / "samples" / "demo2.jpg").read_bytes()
    return data, 464, 330


def _push(
    client: redis.Redis,
    cameras: list[str],
    frames: int,
    jpeg: tuple[bytes, int, int],
    *,
    ts: float | None = None,
    start: int = 0,
) -> None:
    data, w, h = jpeg
    pipe = client.pipeline()
    for i in range(start, start + frames):
        for cam in cameras:
            entry = FrameEntry(cam, i, ts or time.time(), "jpeg", w, h, data)
            pipe.xadd(LAYOUT.frames_for(cam), entry.to_fields())  # type: ignore[arg-type]
    pipe.execute()


def _detections(client: redis.Redis) -> list[tuple[str, DetectionsEntry]]:
    out = []
    for key in LAYOUT.all_detections():
        for sid, fields in client.xrange(key):
            out.append((sid.decode(), DetectionsEntry.from_fields(fields)))
    return out


def _deadletters(client: redis.Redis) -> list[dict[bytes, bytes]]:
    out = []
    for p in range(LAYOUT.partitions):
        out.extend(fields for _, fields in client.xrange(LAYOUT.deadletter(p)))
    return out


def _pending(client: redis.Redis, group: str = "inference") -> int:
    total = 0
    for key in LAYOUT.all_frames():
        if client.exists(key):
            total += int(client.xpending(key, group)["pending"])
    return total


def _settings(redis_url: str, **overrides: Any) -> InferenceSettings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "redis_url": redis_url,
        "stream_partitions": LAYOUT.partitions,
        "max_batch_size": 8,
        "max_frame_age": 600.0,
        "claim_idle": 1.0,
        "claim_interval": 0.3,
        "consumer_name": "in-process",
    }
    base.update(overrides)
    return InferenceSettings(**base)


@pytest.fixture()
def service_factory(detector: Any) -> Iterator[Any]:
    started: list[InferenceService] = []

    def start(redis_url: str, **overrides: Any) -> InferenceService:
        svc = InferenceService(_settings(redis_url, **overrides), detector=detector)
        svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def test_every_frame_of_every_camera_gets_one_entry(
    redis_server: RedisProcess, redis_client: redis.Redis, service_factory: Any, jpeg: Any
) -> None:
    cameras = [f"cam-{i}" for i in range(5)]
    _push(redis_client, cameras[:3], 12, jpeg)
    svc = service_factory(redis_server.url)
    _push(redis_client, cameras[3:], 12, jpeg)  # new cameras while running: no restart
    wait_until(lambda: len(_detections(redis_client)) >= 60, 60, "60 detections entries")
    time.sleep(0.5)
    entries = _detections(redis_client)
    keys = Counter((e.camera_id, e.frame_id) for _, e in entries)
    assert set(keys) == {(c, i) for c in cameras for i in range(12)}
    assert max(keys.values()) == 1
    for _, entry in entries:
        assert entry.status == "ok"
        assert entry.detections.labels == ["mask"]
        assert entry.model == svc.model_version == "upstream"
        frame = redis_client.xrange(
            LAYOUT.frames_for(entry.camera_id), entry.frame_sid, entry.frame_sid
        )
        assert FrameEntry.from_fields(frame[0][1]).frame_id == entry.frame_id
    assert _pending(redis_client) == 0
    processed = sum(
        svc.registry.get_sample_value("facemask_frames_processed_total", {"camera_id": c}) or 0
        for c in cameras
    )
    assert processed == 60
    lag = svc.consumer.measure_lag()
    assert all(v == (0, 0) for v in lag.values())


def test_bad_entries_go_to_dead_letter_and_service_continues(
    redis_server: RedisProcess, redis_client: redis.Redis, service_factory: Any, jpeg: Any
) -> None:
    svc = service_factory(redis_server.url)
    data, w, h = jpeg
    good = FrameEntry("cam-a", 1, time.time(), "jpeg", w, h, data).to_fields()
    key = LAYOUT.frames_for("cam-a")
    bad = {
        "missing_field": {k: v for k, v in good.items() if k != "frame"},
        "bad_version": {**good, "v": "9"},
        "corrupt_image": {**good, "data": b"\xff\xd8\xff garbage"},
        "empty_image": {**good, "data": b""},
        "too_large": {**good, "w": "20000", "h": "20000"},
        "size_mismatch": {**good, "w": "100"},
        "bad_camera": {**good, "camera": "cam\x00\x07"},
    }
    for fields in bad.values():
        redis_client.xadd(key, fields)  # type: ignore[arg-type]
    redis_client.xadd(key, good)  # type: ignore[arg-type]
    wait_until(lambda: len(_deadletters(redis_client)) >= len(bad), 30, "dead letters")
    wait_until(lambda: len(_detections(redis_client)) >= 1, 30, "the good frame")
    reasons = sorted(f[b"reason"].decode() for f in _deadletters(redis_client))
    assert reasons == sorted(bad)
    for f in _deadletters(redis_client):
        assert f[b"error"]
        assert f[b"stream"].decode() == key
    assert [e.frame_id for _, e in _detections(redis_client)] == [1]
    assert _pending(redis_client) == 0
    for reason in bad:
        assert (
            svc.registry.get_sample_value("facemask_inference_deadletter_total", {"reason": reason})
            == 1
        )


def test_old_frames_are_skipped_visibly(
    redis_server: RedisProcess, redis_client: redis.Redis, service_factory: Any, jpeg: Any
) -> None:
    _push(redis_client, ["late"], 5, jpeg, ts=time.time() - 120)
    svc = service_factory(redis_server.url, max_frame_age=2.0)
    wait_until(lambda: len(_detections(redis_client)) >= 5, 30, "skip entries")
    entries = [e for _, e in _detections(redis_client)]
    assert {(e.status, e.reason) for e in entries} == {("skipped", "too_old")}
    assert sorted(e.frame_id for e in entries) == list(range(5))
    assert _pending(redis_client) == 0
    assert (
        svc.registry.get_sample_value(
            "facemask_frames_skipped_total", {"camera_id": "late", "reason": "too_old"}
        )
        == 5
    )


def test_sigkill_mid_stream_loses_no_frame(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    inference_process: Any,
    service_factory: Any,
    jpeg: Any,
) -> None:
    env = {
        "FACEMASK_INFERENCE_REDIS_URL": redis_server.url,
        "FACEMASK_INFERENCE_STREAM_PARTITIONS": str(LAYOUT.partitions),
        "FACEMASK_INFERENCE_CONSUMER_NAME": "doomed",
        "FACEMASK_INFERENCE_MAX_FRAME_AGE": "600",
        "FACEMASK_INFERENCE_MAX_BATCH_SIZE": "2",
        "FACEMASK_INFERENCE_MAX_INFLIGHT": "16",
    }
    doomed = inference_process(**env)
    doomed.wait_serving()
    cameras = ["k1", "k2", "k3", "k4"]
    _push(redis_client, cameras, 60, jpeg)
    wait_until(lambda: len(_detections(redis_client)) >= 20, 60, "first detections")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    done_before = len(_detections(redis_client))
    assert done_before < 240, "the consumer finished before it was killed; push more frames"
    assert _pending(redis_client) > 0, "the killed consumer should leave frames pending"
    survivor = service_factory(redis_server.url, claim_idle=1.0, claim_interval=0.3)
    wait_until(lambda: len(_detections(redis_client)) >= 240, 120, "all 240 frames")
    time.sleep(1.0)
    keys = Counter((e.camera_id, e.frame_id) for _, e in _detections(redis_client))
    assert set(keys) == {(c, i) for c in cameras for i in range(60)}
    assert max(keys.values()) == 1, "a frame got two detections entries"
    assert _pending(redis_client) == 0
    assert (survivor.registry.get_sample_value("facemask_inference_reclaimed_total") or 0) > 0


def test_sigterm_drains_and_acks_everything_processed(
    redis_server: RedisProcess, redis_client: redis.Redis, inference_process: Any, jpeg: Any
) -> None:
    proc = inference_process(
        FACEMASK_INFERENCE_REDIS_URL=redis_server.url,
        FACEMASK_INFERENCE_STREAM_PARTITIONS=str(LAYOUT.partitions),
        FACEMASK_INFERENCE_CONSUMER_NAME="leaving",
        FACEMASK_INFERENCE_MAX_FRAME_AGE="600",
        FACEMASK_INFERENCE_MAX_BATCH_SIZE="4",
        FACEMASK_INFERENCE_MAX_INFLIGHT="32",
    )
    proc.wait_serving()
    _push(redis_client, ["t1", "t2"], 150, jpeg)
    wait_until(lambda: len(_detections(redis_client)) >= 20, 60, "first detections")
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    entries = _detections(redis_client)
    assert 20 <= len(entries) <= 300
    # nothing the leaving consumer read stays pending: it published and acked it all
    assert _pending(redis_client) == 0
    published = {e.frame_sid for _, e in entries}
    for key in LAYOUT.all_frames():
        if not redis_client.exists(key):
            continue
        for info in redis_client.xinfo_groups(key):
            last = info["last-delivered-id"].decode()
            delivered = redis_client.xrange(key, "-", last)
            assert {sid.decode() for sid, _ in delivered} <= published
    log = proc.log_path.read_text()
    assert "inference service stopped" in log
