"""Supervision of the inference service, in-process with the real model and a real
redis-server: a dead publisher is restarted and nothing is lost, health and the ready gauge
follow Redis, a fatal verdict is NOT_SERVING and exit 70."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService
from tests.fixtures.inference import health_status
from tests.fixtures.paths import SHARED_DIR

pytestmark = pytest.mark.model

LAYOUT = StreamLayout("facemask", 4)
SERVING, NOT_SERVING = 1, 2


def push(client: redis.Redis, camera: str, start: int, count: int) -> None:
    data = (SHARED_DIR / "data" / "samples" / "demo2.jpg").read_bytes()
    for i in range(start, start + count):
        entry = FrameEntry(camera, i, time.time(), "jpeg", 464, 330, data)
        client.xadd(LAYOUT.frames_for(camera), entry.to_fields())  # type: ignore[arg-type]


def answered(client: redis.Redis) -> list[int]:
    out = []
    for key in LAYOUT.all_detections():
        out += [DetectionsEntry.from_fields(f).frame_id for _, f in client.xrange(key)]
    return sorted(out)


@pytest.fixture()
def make(detector: Any, redis_server: RedisProcess) -> Iterator[Any]:
    started: list[InferenceService] = []

    def start(**overrides: Any) -> InferenceService:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": 0,
            "redis_url": redis_server.url,
            "stream_partitions": LAYOUT.partitions,
            "max_batch_size": 8,
            "max_frame_age": 600.0,
            "claim_idle": 1.0,
            "claim_interval": 0.3,
            "consumer_name": "supervised",
            "watchdog_interval": 0.05,
        }
        values.update(overrides)
        service = InferenceService(InferenceSettings(**values), detector=detector)
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.stop()


def ready_gauge(service: InferenceService) -> float:
    return service.registry.get_sample_value("facemask_inference_ready") or 0.0


def kill_publisher_once(service: InferenceService) -> None:
    """The publisher thread dies at its next turn (a bug in its loop, say: an error inside
    one publish round trip is isolated per frame and does not end the thread)."""
    consumer = service.consumer
    assert consumer is not None
    outbox = consumer._outbox
    real = outbox.get
    calls: list[int] = []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("publisher killed by the test")
        return real(*args, **kwargs)

    outbox.get = dying  # type: ignore[method-assign]


def test_a_dead_publisher_is_restarted_and_no_frame_is_lost(
    make: Any, redis_client: redis.Redis
) -> None:
    service = make()
    assert health_status(service.port) == SERVING and ready_gauge(service) == 1
    push(redis_client, "cam", 0, 4)
    wait_until(lambda: len(answered(redis_client)) == 4, 30, "first frames")
    kill_publisher_once(service)
    push(redis_client, "cam", 4, 4)
    restarts = ("facemask_inference_loop_restarts_total", {"loop": "stream-publisher"})
    wait_until(lambda: service.registry.get_sample_value(*restarts) == 1, 10, "restarted")
    wait_until(lambda: answered(redis_client) == list(range(8)), 30, "every frame answered once")
    wait_until(lambda: health_status(service.port) == SERVING, 5, "SERVING again")
    assert ready_gauge(service) == 1 and service.supervisor.verdict is None


def test_health_and_ready_gauge_follow_redis(
    make: Any, redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    service = make()
    assert health_status(service.port) == SERVING
    redis_server.stop()
    wait_until(lambda: health_status(service.port) == NOT_SERVING, 15, "NOT_SERVING")
    assert ready_gauge(service) == 0
    assert "stream-groups" in service.supervisor.problems()
    redis_server.start()
    wait_until(lambda: health_status(service.port) == SERVING, 20, "SERVING again")
    assert ready_gauge(service) == 1
    push(redis_client, "cam", 0, 2)
    wait_until(lambda: len(answered(redis_client)) == 2, 30, "frames after the outage")


def test_a_verdict_is_not_serving_and_exit_70(make: Any, redis_client: redis.Redis) -> None:
    from services.inference.__main__ import serve

    service = make(restart_limit=0)
    kill_publisher_once(service)
    push(redis_client, "cam", 0, 1)
    wait_until(service.supervisor.fatal.is_set, 30, "verdict")
    assert "stream-publisher" in (service.supervisor.verdict or "")
    assert health_status(service.port) == NOT_SERVING and ready_gauge(service) == 0
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(serve(service, threading.Event())))
    runner.start()
    runner.join(30.0)
    assert code == [70]


def test_results_redis_refuses_are_a_stall_not_serving_until_it_accepts_them(
    make: Any, redis_client: redis.Redis
) -> None:
    service = make(stall_timeout=1.0)
    assert health_status(service.port) == SERVING
    data = (SHARED_DIR / "data" / "samples" / "demo2.jpg").read_bytes()
    with redis_client.pipeline(transaction=True) as tx:  # the frames, then at once: full
        for i in range(30):
            entry = FrameEntry("cam", i, time.time(), "jpeg", 464, 330, data)
            tx.xadd(LAYOUT.frames_for("cam"), entry.to_fields())  # type: ignore[arg-type]
        tx.config_set("maxmemory-policy", "noeviction")
        tx.config_set("maxmemory", 1)  # every write refused with -OOM from now on
        tx.execute()
    try:
        wait_until(lambda: "publish" in service.supervisor.stalled(), 20, "publish stall")
        assert health_status(service.port) == NOT_SERVING and ready_gauge(service) == 0
        stalled = ("facemask_inference_stalled", {"watch": "publish"})
        assert service.registry.get_sample_value(*stalled) == 1
        assert answered(redis_client) == []
    finally:
        redis_client.config_set("maxmemory", 0)
    wait_until(lambda: answered(redis_client) == list(range(30)), 30, "every frame published")
    wait_until(lambda: health_status(service.port) == SERVING, 10, "SERVING again")
    assert service.registry.get_sample_value(*stalled) == 0
