"""Poison entries of every kind in every stream (issue 13, item 1): real redis-server, the
real stream consumers (inference: its real batcher and decode pool, with a stand-in
detector so no TensorFlow is needed; alerts: the whole in-process service). Each poison
entry ends dead-lettered with a reason and counted, every other frame is processed, the
services keep serving. Bounded in count and time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
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
from services.alerts.engine import AlertEngine
from services.inference.batcher import DynamicBatcher
from services.inference.config import InferenceSettings
from services.inference.consumer import StreamConsumer
from services.inference.metrics import InferenceMetrics
from tests.services.alerts.conftest import (
    LAYOUT as ALERTS_LAYOUT,
)
from tests.services.alerts.conftest import (
    PERSON_A,
    Feeder,
    bare,
    drained,
    faces_of,
    fast_settings,
    masked,
    metric,
    running,
)

pytestmark = [pytest.mark.timeout(60)]

LAYOUT = StreamLayout("facemask", 4)
GROUP = "inference"


class StandInDetector:
    """The detector's interface without a model: no faces, ``delay`` seconds per batch
    (a small, known capacity)."""

    runtime = None
    input_size = INPUT_SIZE

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches = 0

    def infer(self, tensors: Any) -> tuple[np.ndarray, np.ndarray]:
        self.batches += 1
        if self.delay:
            time.sleep(self.delay)
        n = len(tensors)
        return np.zeros((n, 1, 4), np.float32), np.zeros((n, 1, 2), np.float32)

    def postprocess(self, loc: Any, cls: Any, *, conf: float, iou: float) -> Detections:
        return Detections.empty()


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data)


def frame_fields(camera: str, n: int, /, **override: Any) -> dict[str, Any]:
    entry = FrameEntry(camera, n, time.time(), "jpeg", 64, 48, jpeg())
    fields: dict[str, Any] = dict(entry.to_fields())
    fields.update(override)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.fixture()
def inference(redis_server: RedisProcess) -> Iterator[tuple[StreamConsumer, DynamicBatcher]]:
    settings = InferenceSettings(
        redis_url=redis_server.url,
        stream_partitions=LAYOUT.partitions,
        metrics_port=0,
        port=0,
        max_batch_size=8,
        max_frame_age=600.0,
        claim_idle=0.2,
        claim_interval=0.2,
        max_deliveries=5,
        consumer_name="poison-test",
        read_block=0.05,
    )
    batcher = DynamicBatcher(StandInDetector(), max_batch_size=8)  # type: ignore[arg-type]
    client = connect(redis_server.url)
    metrics = InferenceMetrics(CollectorRegistry())
    consumer = StreamConsumer(client, LAYOUT, batcher, metrics, settings)
    yield consumer, batcher
    consumer.stop(5.0)
    batcher.close(5.0)
    client.close()


Ref = tuple[str, str]
"""(stream, entry id): ids are unique per stream only."""


def results(client: redis.Redis) -> dict[Ref, DetectionsEntry]:
    """Detections entries by the frame entry they answer."""
    out = {}
    for partition in range(LAYOUT.partitions):
        for _sid, fields in client.xrange(LAYOUT.detections(partition)):
            entry = DetectionsEntry.from_fields(fields)
            out[(LAYOUT.frames(partition), entry.frame_sid)] = entry
    return out


def dead_letters(client: redis.Redis, keys: list[str]) -> dict[Ref, dict[bytes, bytes]]:
    return {
        (fields[b"stream"].decode(), fields[b"sid"].decode()): fields
        for key in keys
        for _sid, fields in client.xrange(key)
    }


FRAME_POISON: dict[str, dict[str, Any]] = {
    "malformed fields": {"frame": "not a number", "w": "-3"},
    "undecodable image": {"data": b"\xff\xd8 this is no jpeg at all"},
    "wrong size": {"w": "640", "h": "480"},
    "huge declared size": {"w": "100000", "h": "100000"},
    "absurd capture time": {"ts": "1e300"},
    "nan capture time": {"ts": "nan"},
    "missing fields": {"enc": None, "data": None, "ts": None},
    "binary garbage camera id": {"camera": b"\xff\xfe\x00\x01garbage\r\n"},
    "binary garbage everywhere": {"v": b"\x00\xff", "frame": b"\xff" * 40},
}


def test_poison_frames_are_dead_lettered_and_every_other_frame_is_processed(
    redis_client: redis.Redis, inference: tuple[StreamConsumer, DynamicBatcher]
) -> None:
    consumer, _batcher = inference
    cameras = [f"cam{i}" for i in range(8)]
    good: list[Ref] = []
    poison: dict[Ref, str] = {}
    consumer.start()
    for n in range(6):
        for camera in cameras:
            key = LAYOUT.frames_for(camera)
            good.append((key, redis_client.xadd(key, frame_fields(camera, n)).decode()))
        if n < 2:  # every poison kind in every partition, between good frames
            for kind, override in FRAME_POISON.items():
                for partition in range(LAYOUT.partitions):
                    key = LAYOUT.frames(partition)
                    fields = frame_fields(cameras[partition], 1000 + n, **override)
                    poison[(key, redis_client.xadd(key, fields).decode())] = kind
    deadletter_keys = [LAYOUT.deadletter(p) for p in range(LAYOUT.partitions)]

    def settled() -> bool:
        done = results(redis_client)
        dead = dead_letters(redis_client, deadletter_keys)
        return all(sid in done for sid in good) and all(
            sid in dead or sid in done for sid in poison
        )

    wait_until(settled, 30, "every frame answered or dead-lettered")
    done = results(redis_client)
    dead = dead_letters(redis_client, deadletter_keys)
    assert all(done[sid].status == "ok" for sid in good)
    outcome = {}
    for sid, kind in poison.items():
        if sid in dead:
            assert dead[sid][b"reason"] and dead[sid][b"error"], kind
            outcome.setdefault(kind, set()).add(dead[sid][b"reason"].decode())
        else:  # not poison to this service after all: answered like any frame
            outcome.setdefault(kind, set()).add(f"answered:{done[sid].status}")
    # Everything whose processing cannot succeed is dead-lettered, with its reason.
    for kind in (
        "malformed fields",
        "undecodable image",
        "huge declared size",
        "missing fields",
        "binary garbage camera id",
        "binary garbage everywhere",
    ):
        assert all(not reason.startswith("answered") for reason in outcome[kind]), outcome
    counted = consumer.metrics.registry.get_sample_value
    total_dead = sum(
        counted("facemask_inference_deadletter_total", {"reason": reason}) or 0
        for reason in {f[b"reason"].decode() for f in dead.values()}
    )
    assert total_dead == len(dead) == sum(1 for sid in poison if sid in dead)
    wait_until(lambda: consumer.inflight == 0, 5, "every slot free")
    for key in LAYOUT.all_frames():
        assert redis_client.xpending(key, GROUP)["pending"] == 0
    assert not consumer.failed and consumer.streams.running
    print("poison frame outcomes:", {k: sorted(v) for k, v in outcome.items()})


def test_whatever_raises_for_one_frame_in_any_stage_dead_letters_only_that_frame(
    redis_client: redis.Redis,
    inference: tuple[StreamConsumer, DynamicBatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a parse error: a bug or an absurd value that raises while parsing, submitting,
    in the result callback or while publishing. The frame is retried (reclaimed) up to
    entry_attempts times, then dead-lettered as ``error`` with the exception; nothing
    else stops."""
    consumer, batcher = inference
    parse, submit, to_fields = FrameEntry.from_fields, batcher.submit, DetectionsEntry.to_fields

    def parse_raising(fields: Any, **kwargs: Any) -> FrameEntry:
        if fields.get(b"camera") == b"bad-parse":
            raise OverflowError("absurd value while parsing")
        return parse(fields, **kwargs)

    def submit_raising(job: Any) -> Any:
        if job.camera_id == "bad-submit":
            raise ValueError("the batcher cannot take this job")
        return submit(job)

    def fields_raising(self: DetectionsEntry) -> dict[str, Any]:
        if self.camera_id == "bad-result":
            raise OverflowError("cannot format this capture time")
        if self.camera_id == "bad-publish":
            return {**to_fields(self), "extra": None}  # a value Redis cannot take
        return to_fields(self)

    monkeypatch.setattr(FrameEntry, "from_fields", staticmethod(parse_raising))
    monkeypatch.setattr(batcher, "submit", submit_raising)
    monkeypatch.setattr(DetectionsEntry, "to_fields", fields_raising)
    bad = {"bad-parse": "OverflowError", "bad-submit": "ValueError", "bad-result": "OverflowError"}
    bad["bad-publish"] = "TypeError"
    good: list[Ref] = []
    poison: dict[Ref, str] = {}
    consumer.start()
    for n in range(5):
        for camera in [f"cam{i}" for i in range(4)] + list(bad):
            key = LAYOUT.frames_for(camera)
            sid = redis_client.xadd(key, frame_fields(camera, n)).decode()
            if camera in bad:
                poison[(key, sid)] = camera
            else:
                good.append((key, sid))
    deadletter_keys = [LAYOUT.deadletter(p) for p in range(LAYOUT.partitions)]

    def settled() -> bool:
        done, dead = results(redis_client), dead_letters(redis_client, deadletter_keys)
        return all(ref in done for ref in good) and all(ref in dead for ref in poison)

    wait_until(settled, 30, "every good frame answered, every bad one dead-lettered")
    done, dead = results(redis_client), dead_letters(redis_client, deadletter_keys)
    assert all(done[ref].status == "ok" for ref in good)
    for ref, camera in poison.items():
        assert dead[ref][b"reason"] == b"error", camera
        assert dead[ref][b"error"].decode().startswith(bad[camera] + ":"), dead[ref]
    assert len(dead) == len(poison)  # each once
    value = consumer.metrics.registry.get_sample_value
    assert value("facemask_inference_deadletter_total", {"reason": "error"}) == len(poison)
    wait_until(lambda: consumer.inflight == 0, 5, "every slot free")
    assert not consumer.failed and consumer.streams.running
    assert consumer.streams.taken == consumer.streams.settled


# -- the alert service ---------------------------------------------------------------


@pytest.fixture()
def sample_jpeg() -> tuple[bytes, int, int]:
    return jpeg(464, 330), 464, 330


def detections_fields(camera: str, frame_sid: str, /, **override: Any) -> dict[str, Any]:
    entry = DetectionsEntry(
        camera,
        1,
        frame_sid,
        time.time(),
        time.time(),
        464,
        330,
        "test",
        detections=faces_of([bare(PERSON_A)], 464, 330),  # a person without a mask
    )
    fields: dict[str, Any] = dict(entry.to_fields())
    fields.update(override)
    return {k: v for k, v in fields.items() if v is not None}


def test_poison_detections_entries_are_dead_lettered_and_the_alerts_keep_coming(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_process = AlertEngine.process

    def engine_raising(self: AlertEngine, stream: str, sid: str, entry: Any) -> Any:
        if entry.camera_id == "chokes":
            raise ZeroDivisionError("the engine chokes on this entry")
        return real_process(self, stream, sid, entry)

    monkeypatch.setattr(AlertEngine, "process", engine_raising)
    settings = fast_settings(redis_server.url, tmp_path / "state", retry_initial=0.05)
    poison_kinds: dict[str, dict[str, Any]] = {
        "malformed": {"w": "wide", "dets": "{not json"},
        "missing fields": {"ts": None, "camera": None},
        "garbage camera": {"camera": b"\xff\x00\xfe"},
        "absurd timestamp": {"ts": "1e300", "t_done": "-1e300"},
        "infinite timestamp": {"ts": "inf"},
        "nan timestamp": {"ts": "nan"},
        "negative timestamp": {"ts": "-5e15"},
        "bad frame sid": {"frame_sid": "\x00garbage"},
    }
    with running(settings) as service:
        assert service.consumer is not None
        wait_until(lambda: service.consumer and service.consumer.running(), 5, "consumer")
        feeders = [Feeder(redis_client, f"door{i}", sample_jpeg) for i in range(3)]
        poison: dict[Ref, str] = {}
        for n in range(4):
            for feeder in feeders:
                feeder.frame([masked(PERSON_A)] if n % 2 else [bare(PERSON_A)])
            for partition in range(ALERTS_LAYOUT.partitions):
                key = ALERTS_LAYOUT.detections(partition)
                kinds = list(poison_kinds.items())
                kind, override = kinds[(n * ALERTS_LAYOUT.partitions + partition) % len(kinds)]
                sid = redis_client.xadd(key, detections_fields("odd", "1-0", **override))
                poison[(key, sid.decode())] = kind
            # the engine raising, whatever the entry
            chokes = Feeder(redis_client, "chokes", sample_jpeg)
            sid, _ = chokes.frame([masked(PERSON_A)])
            chokes_key = ALERTS_LAYOUT.detections(ALERTS_LAYOUT.partition_of("chokes"))
            poison[(chokes_key, sid)] = "engine raises"
        wait_until(lambda: drained(redis_client), 20, "every entry acknowledged")
        dead = {
            (f[b"stream"].decode(), f[b"sid"].decode()): f
            for _id, f in redis_client.xrange(ALERTS_LAYOUT.alerts_deadletter)
        }
        outcome: dict[str, set[str]] = {}
        for ref, kind in poison.items():
            outcome.setdefault(kind, set()).add(
                dead[ref][b"reason"].decode() if ref in dead else "processed"
            )
        # What cannot be processed is dead-lettered with its reason; an absurd timestamp
        # is either refused by the parser, raises later (dead-lettered as error), or is
        # processed: never does it stop the consumer.
        for kind in ("malformed", "missing fields", "garbage camera", "bad frame sid"):
            assert "processed" not in outcome[kind], outcome
        assert outcome["engine raises"] == {"error"}
        for fields in dead.values():
            assert fields[b"error"], fields
        reasons = {f[b"reason"].decode() for f in dead.values()}
        counted = sum(
            metric(service, "facemask_alerts_deadletter_total", {"reason": r}) for r in reasons
        )
        assert counted == len(dead)
        # Every good entry of every camera was processed: 2 bare and 2 masked each.
        for feeder in feeders:
            for label in ("mask", "no_mask"):
                seen = {"camera_id": feeder.camera_id, "label": label}
                assert metric(service, "facemask_faces_seen_total", seen) == 2, seen
        assert service.consumer.running()
        # ... and it keeps serving.
        feeders[1].frames(3, [masked(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "entries after the poison")
        seen = {"camera_id": feeders[1].camera_id, "label": "mask"}
        assert metric(service, "facemask_faces_seen_total", seen) == 5
        print("poison detections outcomes:", {k: sorted(v) for k, v in outcome.items()})
