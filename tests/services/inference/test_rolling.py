"""Rolling model updates across two real inference replicas (in-process, the real model)
on a real redis-server, under a bounded stream of frames: promote a second version (the
upstream weights stored as a version of the model store: another id, no training needed),
then roll back. Every frame gets exactly one detections entry; each replica's entries
change version once per swap, in order; frames pushed after both replicas swapped carry
the new version. A version that cannot be loaded leaves the running one serving, and the
replica says why."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra import rollout
from facemask.model.detector import Detector
from facemask.model.registry import UPSTREAM, ModelRegistry, ModelVersion
from facemask.v1 import detector_pb2, detector_pb2_grpc
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService
from tests.fixtures.inference import health_status
from tests.fixtures.paths import SHARED_DIR
from tests.fixtures.registry import small_card

pytestmark = [pytest.mark.model, pytest.mark.slow]

LAYOUT = StreamLayout("facemask", 4)
CAMERAS = ("lobby", "door")
SERVING = 1
FRAME_INTERVAL_S = 0.08
"""Frames pushed every 80 ms (12.5 frames/s over both cameras): a steady, bounded load."""


class Pusher:
    """Pushes frames of :data:`CAMERAS` in turn until stopped; remembers each frame's
    phase (the test's moment when it was pushed)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.data = (SHARED_DIR / "data" / "samples" / "demo2.jpg").read_bytes()
        self.phase = "before"
        self.phases: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pusher", daemon=True)

    def _run(self) -> None:
        frame = 0
        while not self._stop.wait(FRAME_INTERVAL_S):
            camera = CAMERAS[frame % len(CAMERAS)]
            entry = FrameEntry(camera, frame, time.time(), "jpeg", 464, 330, self.data)
            self.phases[(camera, frame)] = self.phase
            self.client.xadd(LAYOUT.frames_for(camera), entry.to_fields())  # type: ignore[arg-type]
            frame += 1

    def __enter__(self) -> Pusher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def entries(client: redis.Redis) -> list[DetectionsEntry]:
    out: list[DetectionsEntry] = []
    for key in LAYOUT.all_detections():
        reply: Any = client.xrange(key)
        out.extend(DetectionsEntry.from_fields(f) for _, f in reply)
    return out


def record_publish_order(service: InferenceService) -> list[tuple[str, int, str]]:
    """``(camera, frame, model)`` of every outcome the replica hands to its publisher, in
    order (its publisher publishes them in this order)."""
    consumer = service.consumer
    assert consumer is not None
    outbox, seen = consumer._outbox, []
    real = outbox.put

    def put(item: Any, *args: Any, **kwargs: Any) -> None:
        fields = item.fields
        if "model" in fields:
            seen.append((fields["camera"], int(fields["frame"]), fields["model"]))
        real(item, *args, **kwargs)

    outbox.put = put  # type: ignore[method-assign]
    return seen


def runs(sequence: list[str]) -> list[str]:
    """``sequence`` with repeats collapsed: the versions in the order they followed."""
    return [v for i, v in enumerate(sequence) if i == 0 or sequence[i - 1] != v]


def tail_of(seen: list[tuple[str, int, str]], version: str) -> int:
    """How many of the last outcomes, in a row, carry ``version``."""
    count = 0
    for _, _, model in reversed(seen):
        if model != version:
            break
        count += 1
    return count


def model_info(port: int) -> detector_pb2.ModelInfo:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        return stub.GetModelInfo(detector_pb2.GetModelInfoRequest(), timeout=5)


def info_series(service: InferenceService) -> dict[str, str]:
    """``version -> variant`` of every ``facemask_model_info`` series set to 1."""
    out = {}
    for metric in service.registry.collect():
        for sample in metric.samples:
            if sample.name == "facemask_model_info" and sample.value == 1:
                out[sample.labels["version"]] = sample.labels["variant"]
    return out


@pytest.fixture()
def replicas(detector: Detector, redis_server: RedisProcess, tmp_path: Path) -> Iterator[Any]:
    """Starts replicas sharing the consumer group; each has its own (empty) model store,
    so a promoted version reaches it through Redis. They start on the session's upstream
    detector (not theirs: never closed by a swap)."""
    started: list[InferenceService] = []

    def start(name: str, **overrides: Any) -> InferenceService:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": 0,
            "redis_url": redis_server.url,
            "stream_partitions": LAYOUT.partitions,
            "max_batch_size": 8,
            "max_frame_age": 600.0,
            "consumer_name": name,
            "runtime": "tensorflow",
            "precision": "auto",  # whichever TensorFlow precision this test process runs
            "threads": 1,
            "model_poll_interval": 2.0,
            "watchdog_interval": 0.05,
        }
        values.update(overrides)
        store = ModelRegistry(tmp_path / f"store-{name}")
        service = InferenceService(InferenceSettings(**values), detector, model_registry=store)
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()


def running(service: InferenceService, version: str) -> bool:
    watcher = service.watcher
    assert watcher is not None
    return watcher.status.version == version


def test_promote_and_rollback_under_load_every_frame_once_versions_in_order(
    replicas: Any,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
) -> None:
    new = upstream_copy.version
    promoter = redis_client
    rollout.promote(promoter, model_registry, UPSTREAM, layout=LAYOUT)  # the cluster's model
    a, b = replicas("replica-a"), replicas("replica-b")
    order = {s.settings.consumer_name: record_publish_order(s) for s in (a, b)}

    def each_replica_ran(version: str) -> bool:
        return all(tail_of(seen, version) >= 3 for seen in order.values())

    with Pusher(redis_client) as pusher:
        wait_until(lambda: each_replica_ran(UPSTREAM), 30, "frames answered on upstream")
        pusher.phase = "promoting"
        rollout.promote(promoter, model_registry, new, by="test", layout=LAYOUT)
        wait_until(lambda: running(a, new) and running(b, new), 20, "both replicas on the new")
        pusher.phase = "new"
        wait_until(lambda: each_replica_ran(new), 30, "frames on the new version")
        pusher.phase = "rolling back"
        rolled = rollout.rollback(promoter, model_registry, by="test", layout=LAYOUT)
        assert rolled.version == UPSTREAM
        wait_until(lambda: running(a, UPSTREAM) and running(b, UPSTREAM), 20, "both back")
        pusher.phase = "back"
        wait_until(lambda: each_replica_ran(UPSTREAM), 30, "frames after the rollback")
    pushed = pusher.phases
    wait_until(lambda: len(entries(redis_client)) >= len(pushed), 30, "every frame answered")

    got = entries(redis_client)
    counts = Counter((e.camera_id, e.frame_id) for e in got)
    assert set(counts) == set(pushed) and set(counts.values()) == {1}  # each exactly once
    assert all(e.status == "ok" for e in got)
    by_phase = {(e.camera_id, e.frame_id): e.model for e in got}
    for frame, phase in pushed.items():
        if phase == "new":
            assert by_phase[frame] == new, frame  # pushed after both replicas swapped
        if phase in ("before", "back"):
            assert by_phase[frame] == UPSTREAM, frame
    published = [frame for seen in order.values() for frame in seen]
    assert sorted((c, f) for c, f, _ in published) == sorted(pushed)  # no replica twice
    for name, seen in order.items():
        versions = runs([model for _, _, model in seen])
        assert versions == [UPSTREAM, new, UPSTREAM], (name, versions)  # one switch per swap
    for service in (a, b):
        assert info_series(service) == {UPSTREAM: "tensorflow-float32"}  # the new one's gone
        info = model_info(service.port)
        assert (info.version, info.wanted_version, info.load_error) == (UPSTREAM, UPSTREAM, "")
        assert health_status(service.port) == SERVING
        assert service.registry.get_sample_value("facemask_model_load_failures_total") is None


def test_a_version_that_cannot_load_keeps_the_old_model_and_says_why(
    replicas: Any, redis_client: redis.Redis, model_registry: ModelRegistry, tmp_path: Path
) -> None:
    broken_pb = tmp_path / "broken.pb"
    broken_pb.write_bytes(b"this is not a frozen TensorFlow graph")
    broken = model_registry.add({"tf": broken_pb}, small_card())
    a = replicas("replica-a", model_retry_interval=3600.0, model_poll_interval=0.2)
    promoter = redis_client
    with Pusher(redis_client):
        wait_until(lambda: len(entries(redis_client)) >= 5, 30, "frames answered on upstream")
        rollout.promote(promoter, model_registry, broken.version, layout=LAYOUT)
        failures = ("facemask_model_load_failures_total", {"reason": "load"})
        wait_until(lambda: a.registry.get_sample_value(*failures) == 1, 20, "the failure counted")
        answered = len(entries(redis_client))
        wait_until(lambda: len(entries(redis_client)) >= answered + 10, 30, "still answering")
    info = model_info(a.port)
    assert info.version == UPSTREAM and info.wanted_version == broken.version
    assert info.load_error.startswith("load: ")
    assert health_status(a.port) == SERVING  # it serves the old model
    assert all(e.model == UPSTREAM for e in entries(redis_client))
    assert info_series(a) == {UPSTREAM: "tensorflow-float32"}
    time.sleep(5 * a.settings.model_poll_interval)  # five polls of the same failed version
    assert a.registry.get_sample_value(*failures) == 1  # not retried before its back-off


def test_a_corrupt_blob_in_redis_is_refused_and_reported(
    replicas: Any,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
) -> None:
    version = upstream_copy.version
    a = replicas("replica-a", model_retry_interval=3600.0)

    def activate(promoted_at: str) -> None:
        """What a promote does once the files are up: set the key, publish the change."""
        record = rollout.ActiveModel(version, None, promoted_at, "test").to_json()
        redis_client.set(LAYOUT.model_active, record)
        redis_client.publish(LAYOUT.model_events, record)

    # The files in Redis are damaged: model.pb no longer matches the version's id and card,
    # so the replica refuses it before anything is stored or loaded.
    rollout.upload(redis_client, model_registry, version, layout=LAYOUT)
    redis_client.hset(LAYOUT.model_blob(version), "model.pb", b"garbage")
    activate("2026-01-01T00:00:00+00:00")
    failures = ("facemask_model_load_failures_total", {"reason": "fetch"})
    wait_until(lambda: a.registry.get_sample_value(*failures) == 1, 20, "fetch refused")
    info = model_info(a.port)
    assert info.version == UPSTREAM and info.wanted_version == version
    assert info.load_error.startswith("fetch: ")
    assert health_status(a.port) == SERVING
    assert a.watcher is not None and not a.watcher.loader.registry.has(version)
    # Promoted again with good files: tried at once (not after the hour-long back-off).
    rollout.upload(redis_client, model_registry, version, layout=LAYOUT)
    activate("2026-01-01T00:05:00+00:00")
    wait_until(lambda: running(a, version), 20, "the repaired version swapped in")
    info = model_info(a.port)
    assert (info.version, info.wanted_version, info.load_error) == (version, version, "")
    assert a.registry.get_sample_value(*failures) == 1
