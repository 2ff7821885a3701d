"""Publisher: MAXLEN bound, bounded ring buffer across an outage, errors, layout check."""

from __future__ import annotations

import threading

import pytest
import redis

from facemask.contracts.streams import LayoutMismatchError, StreamLayout
from facemask.contracts.wire import FrameEntry
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra.redisconn import connect
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import OutgoingFrame, Publisher

LAYOUT = StreamLayout()


def frame(camera: str, frame_id: int, size: int = 64) -> OutgoingFrame:
    data = bytes([frame_id % 256]) * size
    entry = FrameEntry(camera, frame_id, 1.7e9 + frame_id, "jpeg", 8, 8, data, "n1")
    return OutgoingFrame(camera, LAYOUT.frames_for(camera), frame_id, entry.to_fields(), size)


def make(url: str, metrics: IngestMetrics, **kw: object) -> Publisher:
    params: dict[str, object] = {
        "maxlen": 1000,
        "capacity": 8,
        "batch": 4,
        "backoff_initial": 0.05,
        "backoff_max": 0.3,
    }
    params.update(kw)
    return Publisher(connect(url), metrics=metrics, **params)  # type: ignore[arg-type]


def ids_in_stream(client: redis.Redis, camera: str) -> list[int]:
    return [
        FrameEntry.from_fields(f).frame_id
        for _sid, f in client.xrange(LAYOUT.frames_for(camera))
        if FrameEntry.from_fields(f).camera_id == camera
    ]


def test_publishes_in_order_and_bounds_the_stream(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    # Approximate trimming removes whole radix-tree nodes; small nodes make the bound tight.
    redis_client.config_set("stream-node-max-entries", 10)
    metrics = IngestMetrics()
    pub = make(redis_server.url, metrics, maxlen=30, capacity=500, batch=16)
    pub.start()
    for i in range(300):
        pub.put(frame("cam-a", i))
    wait_until(
        lambda: (
            metrics.value("facemask_ingest_frames_published_total", {"camera_id": "cam-a"}) == 300
        ),
        10,
    )
    assert pub.close(2.0) == 0
    ids = ids_in_stream(redis_client, "cam-a")
    assert ids == list(range(300 - len(ids), 300))  # the newest, in order
    assert 30 <= redis_client.xlen(LAYOUT.frames_for("cam-a")) <= 40
    assert (
        metrics.value("facemask_ingest_published_bytes_total", {"camera_id": "cam-a"}) == 300 * 64
    )
    assert pub.last_published["cam-a"] == 299
    assert metrics.value("facemask_ingest_buffer_frames") == 0


def test_outage_keeps_newest_frames_and_resumes(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    metrics = IngestMetrics()
    pub = make(redis_server.url, metrics, capacity=8)
    pub.start()
    pub.put(frame("cam-a", 0))
    wait_until(lambda: pub.last_published.get("cam-a") == 0, 5)
    redis_server.stop()
    for i in range(1, 31):
        pub.put(frame("cam-a", i))
        assert pub.pending() <= 8 + 4  # capacity + the batch being sent
    wait_until(lambda: metrics.value("facemask_ingest_redis_up") == 0, 5)
    wait_until(lambda: pub.pending() == 8, 5)
    dropped = metrics.value(
        "facemask_ingest_frames_dropped_total", {"camera_id": "cam-a", "reason": "buffer_full"}
    )
    assert dropped == 30 - 8
    assert metrics.value("facemask_ingest_buffer_frames") == 8
    redis_server.start()
    wait_until(lambda: pub.last_published.get("cam-a") == 30, 10)
    assert metrics.value("facemask_ingest_redis_reconnects_total") == 1
    assert pub.close(2.0) == 0
    client = redis.Redis.from_url(redis_server.url)
    assert ids_in_stream(client, "cam-a") == [0, *range(23, 31)]
    client.close()


def test_shutdown_deadline_while_redis_is_down(redis_server: RedisProcess) -> None:
    metrics = IngestMetrics()
    pub = make(redis_server.url, metrics)
    redis_server.stop()
    pub.start()
    for i in range(5):
        pub.put(frame("cam-b", i))
    assert pub.close(0.3) == 5
    assert (
        metrics.value(
            "facemask_ingest_frames_dropped_total", {"camera_id": "cam-b", "reason": "shutdown"}
        )
        == 5
    )


def test_refused_entries_are_dropped_and_counted(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    bad, good = "cam-x", "cam-y"
    assert LAYOUT.frames_for(bad) != LAYOUT.frames_for(good)
    redis_client.set(LAYOUT.frames_for(bad), "not a stream")
    metrics = IngestMetrics()
    pub = make(redis_server.url, metrics)
    pub.start()
    pub.put(frame(bad, 1))
    pub.put(frame(good, 1))
    wait_until(lambda: pub.last_published.get(good) == 1, 5)
    assert pub.close(1.0) == 0
    assert (
        metrics.value(
            "facemask_ingest_frames_dropped_total", {"camera_id": bad, "reason": "redis_error"}
        )
        == 1
    )


def test_layout_mismatch_is_fatal(redis_server: RedisProcess, redis_client: redis.Redis) -> None:
    redis_client.hset(LAYOUT.meta, "partitions", "8")
    errors: list[BaseException] = []
    called = threading.Event()

    def fatal(exc: BaseException) -> None:
        errors.append(exc)
        called.set()

    pub = make(redis_server.url, IngestMetrics(), on_connect=LAYOUT.check_meta, on_fatal=fatal)
    pub.start()
    assert called.wait(5)
    assert isinstance(errors[0], LayoutMismatchError)
    pub.put(frame("cam-a", 1))
    assert pub.close(0.5) == 1
    assert redis_client.exists(LAYOUT.frames_for("cam-a")) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make("redis://127.0.0.1:1/0", IngestMetrics(), capacity=0)


def test_redis_at_maxmemory_keeps_the_frames_and_sends_them_once_it_accepts_again(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    metrics = IngestMetrics()
    pub = make(redis_server.url, metrics, capacity=50)
    pub.start()
    pub.put(frame("cam-m", 0))
    wait_until(lambda: ids_in_stream(redis_client, "cam-m") == [0], 10)
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", used // 2)  # every XADD now gets -OOM
    try:
        for i in range(1, 11):
            pub.put(frame("cam-m", i))
        refusals = "facemask_ingest_redis_refusals_total"
        wait_until(lambda: metrics.value(refusals, {"kind": "oom"}) >= 2, 10, "OOM refusals")
        assert metrics.value("facemask_ingest_redis_up") == 0
        assert pub.pending() == 10  # kept, none dropped as an error
    finally:
        redis_client.config_set("maxmemory", 0)
    wait_until(lambda: ids_in_stream(redis_client, "cam-m") == list(range(11)), 10, "resumed")
    assert metrics.value("facemask_ingest_redis_up") == 1
    dropped = metrics.value(
        "facemask_ingest_frames_dropped_total", {"camera_id": "cam-m", "reason": "redis_error"}
    )
    assert dropped == 0
    assert pub.close(2.0) == 0
