"""The detections consumer bounds redeliveries: a batch that keeps failing is rolled back
and read again at most ``max_deliveries`` times, then dead-lettered with a reason, and the
entries after it are processed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.engine import AlertEngine
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    Feeder,
    drained,
    fast_settings,
    masked,
    metric,
    running,
)


def test_a_batch_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_process = AlertEngine.process

    def poisoned(self: AlertEngine, stream: str, sid: str, entry: Any) -> Any:
        if entry.camera_id == "poison":
            raise RuntimeError("the engine chokes on this entry")
        return real_process(self, stream, sid, entry)

    monkeypatch.setattr(AlertEngine, "process", poisoned)
    settings = fast_settings(redis_server.url, tmp_path / "state").model_copy(
        update={"max_deliveries": 2}
    )
    with running(settings) as service:
        wait_until(lambda: service.consumer and service.consumer.running(), 5, "consumer")
        poison_sid, _entry = Feeder(redis_client, "poison", sample_jpeg).frame([masked(PERSON_A)])
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts_deadletter) == 1, 10, "dead letter")
        ((_id, fields),) = redis_client.xrange(LAYOUT.alerts_deadletter)
        assert fields[b"reason"] == b"max_deliveries"
        assert fields[b"sid"].decode() == poison_sid
        assert fields[b"error"] == b"delivered 2 times without a result"
        assert fields[b"camera"] == b"poison"
        # Delivered, failed, read again, failed: two attempts, then the dead letter.
        assert metric(service, "facemask_alerts_batch_failures_total") == 2
        labels = {"reason": "max_deliveries"}
        assert metric(service, "facemask_alerts_deadletter_total", labels) == 1

        Feeder(redis_client, "lobby", sample_jpeg).frames(3, [masked(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "the entries after it")
        faces = {"camera_id": "lobby", "label": "mask"}
        assert metric(service, "facemask_faces_seen_total", faces) == 3
        assert redis_client.xlen(LAYOUT.alerts_deadletter) == 1
