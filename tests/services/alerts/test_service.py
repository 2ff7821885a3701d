"""Acceptance of the alert service, in-process, with real redis-server, mosquitto and HTTP
receivers: one alert per unmasked person, none for masks or flicker, dead letters,
duplicates, missing snapshots, crash windows, and the sample clip through the real detector."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import redis

from facemask.contracts.wire import AlertEvent
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.consumer import DetectionsConsumer
from services.alerts.metrics import AlertMetrics
from services.alerts.service import AlertService
from services.alerts.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from services.alerts.store import AlertStore
from tests.fixtures.mqtt import MosquittoProcess, MqttRecorder
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    PERSON_B,
    PERSON_C,
    POSTER_MASK,
    Clip,
    Feeder,
    HookServer,
    bare,
    describe_alerts,
    drained,
    expected_alerts,
    fast_settings,
    feed_clip,
    masked,
    metric,
    register_camera,
    running,
)

SECRET = "webhook-secret"


def api(service: Any, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{service.port}{path}", timeout=5.0, **kwargs)


def alerts_of(service: Any, **params: Any) -> list[dict[str, Any]]:
    response = api(service, "/api/alerts", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


def test_unmasked_person_for_3s_gives_one_alert_delivered_once_everywhere(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    mosquitto: MosquittoProcess,
    mqtt_recorder: MqttRecorder,
    hooks: HookServer,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    settings = fast_settings(
        redis_server.url,
        tmp_path / "state",
        webhook_url=hooks.url + "/hook",
        webhook_secret=SECRET,
        slack_webhook_url=hooks.url + "/slack",
        mqtt_url=mosquitto.url,
        public_base_url="http://dash.example:8080",
    )
    register_camera(redis_client, "lobby", name="Lobby", location="Main hall")
    with running(settings) as service:
        assert sorted(s.name for s in service.sinks) == ["mqtt", "redis", "slack", "webhook"]
        feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 8)
        feed.frames(10, [masked(PERSON_A), masked(PERSON_B)])  # 2 s, all masked
        feed.frames(15, [masked(PERSON_A), bare(PERSON_B)])  # B unmasked for 3 s
        feed.frames(10, [masked(PERSON_A), masked(PERSON_B)])  # and masked again
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        wait_until(
            lambda: len(hooks.received("/hook")) and len(hooks.received("/slack")), 10, "hooks"
        )
        wait_until(lambda: mqtt_recorder.on("lobby/alert"), 10, "mqtt alert")
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts), 10, "alerts stream")
        time.sleep(1.0)  # anything duplicated would have arrived by now

        (alert,) = alerts_of(service)
        assert alert["camera_id"] == "lobby" and alert["place"] == "Main hall"
        assert alert["box"] == list(PERSON_B) and alert["has_snapshot"]
        # The 5th unmasked frame of 8 (K=5 of N=8 defaults) raised it.
        _sid, fifth_bare = feed.entries[10 + 4]
        assert alert["frame_id"] == fifth_bare.frame_id

        # Snapshot: the frame with B's box drawn in the violator's amber, B's crop beside.
        snap = api(service, alert["snapshot_url"])
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (330, 464 + 155)
        x1, y1, _x2, y2 = PERSON_B
        edge = image[y1 + 10 : y2 - 10, x1 - 1 : x1 + 2].reshape(-1, 3).astype(int)
        amber = (edge[:, 2] > 200) & (np.abs(edge[:, 1] - 191) < 40) & (edge[:, 0] < 90)
        assert amber.mean() > 0.8
        thumb = api(service, alert["thumbnail_url"])
        assert thumb.status_code == 200

        # Webhook: exactly one signed request.
        (hook,) = hooks.received("/hook")
        assert verify_signature(
            SECRET, hook.headers[TIMESTAMP_HEADER], hook.body, hook.headers[SIGNATURE_HEADER]
        )
        body = hook.json()
        assert body["alert"]["id"] == alert["id"]
        assert body["snapshot_url"] == (
            f"http://dash.example:8080/api/alerts/{alert['id']}/snapshot.jpg"
        )
        # Slack: one message with camera, place, time and the snapshot link.
        (slack,) = hooks.received("/slack")
        text = json.dumps(slack.json())
        assert "Lobby" in text and "Main hall" in text and body["snapshot_url"] in text
        # MQTT: one alert event; the retained compliance state of the camera.
        (event,) = mqtt_recorder.on("facemask/lobby/alert")
        assert json.loads(event.payload)["id"] == alert["id"]
        wait_until(lambda: mqtt_recorder.on("facemask/lobby/compliance"), 5, "compliance")
        state = json.loads(mqtt_recorder.on("facemask/lobby/compliance")[-1].payload)
        assert state["camera_id"] == "lobby" and 0.5 < state["compliance"] < 1.0
        # Redis stream (the voice prompt's input): one AlertEvent.
        ((_sid, fields),) = redis_client.xrange(LAYOUT.alerts)
        assert AlertEvent.from_fields(fields).alert_id == alert["id"]

        detail = api(service, f"/api/alerts/{alert['id']}").json()
        assert {d["sink"]: d["status"] for d in detail["deliveries"]} == dict.fromkeys(
            ("mqtt", "redis", "slack", "webhook"), "delivered"
        )
        assert metric(service, "facemask_alerts_total", {"camera_id": "lobby"}) == 1
        for sink in ("mqtt", "redis", "slack", "webhook"):
            labels = {"sink": sink, "outcome": "delivered"}
            assert metric(service, "facemask_sink_deliveries_total", labels) == 1
        faces = {"camera_id": "lobby", "label": "no_mask"}
        assert metric(service, "facemask_faces_seen_total", faces) == 15
        assert metric(service, "facemask_alerts_detections_consumed_total") == 35


def test_masked_crowd_and_flicker_give_no_alert(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    with running(fast_settings(redis_server.url, tmp_path / "state")) as service:
        start = time.time() - 12
        crowd = Feeder(redis_client, "crowd", sample_jpeg, start_ts=start)
        flicker = Feeder(redis_client, "flicker", sample_jpeg, start_ts=start)
        for i in range(50):  # 10 s each
            crowd.frame([masked(PERSON_A), masked(PERSON_B, 0.7), masked(PERSON_C)])
            # A single no_mask frame every 3rd frame: at most 3 of any 8 (K=5 needs 5).
            label = bare if i % 3 == 0 else masked
            flicker.frame([label(PERSON_B)])
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        service.maintain_once()
        assert alerts_of(service) == []
        assert redis_client.xlen(LAYOUT.alerts) == 0
        assert metric(service, "facemask_compliance_ratio", {"camera_id": "crowd"}) == 1.0
        assert 0.5 < metric(service, "facemask_compliance_ratio", {"camera_id": "flicker"}) < 0.8
        assert metric(service, "facemask_alerts_detections_consumed_total") == 100
        cameras = {c["id"]: c for c in api(service, "/api/cameras").json()["cameras"]}
        assert cameras["crowd"]["compliance"] == 1.0 and cameras["crowd"]["faces"] > 0


def test_malformed_entries_go_to_the_dead_letter_stream(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    with running(fast_settings(redis_server.url, tmp_path / "state")) as service:
        feed = Feeder(redis_client, "lobby", sample_jpeg)
        _sid, good = feed.frame([masked(PERSON_A)])
        key = LAYOUT.detections(LAYOUT.partition_of("lobby"))
        base = good.to_fields()
        bad_entries = {
            "bad_version": {**base, "v": "9"},
            "bad_detections": {**base, "dets": "not json"},
            "missing_field": {k: v for k, v in base.items() if k != "camera"},
            "bad_field": {**base, "frame_sid": "nonsense", "frame": "123"},
        }
        for fields in bad_entries.values():
            redis_client.xadd(key, fields)  # type: ignore[arg-type]
        redis_client.xadd(key, {**base, "dets": json.dumps([{"label": "hat", "score": 1}])})
        feed.frame([masked(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        dead = redis_client.xrange(LAYOUT.alerts_deadletter)
        reasons = [fields[b"reason"].decode() for _sid, fields in dead]
        assert reasons == [*bad_entries, "bad_detections"]
        first = dead[0][1]
        assert first[b"stream"].decode() == key and first[b"orig_v"] == b"9"
        assert b"format version" in first[b"error"]
        assert (
            metric(service, "facemask_alerts_deadletter_total", {"reason": "bad_detections"}) == 2
        )
        # The good entries around them were processed.
        assert (
            metric(service, "facemask_faces_seen_total", {"camera_id": "lobby", "label": "mask"})
            == 2
        )


def test_duplicates_are_ignored_and_trimmed_frames_still_alert(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    settings = fast_settings(redis_server.url, tmp_path / "state", rule_k=3, rule_n=4)
    with running(settings) as service:
        feed = Feeder(redis_client, "lobby", sample_jpeg)
        sent = feed.frames(2, [bare(PERSON_A)])
        for _sid, entry in sent:  # every entry published twice: still 2 votes, not 4
            feed.publish(entry)
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        assert alerts_of(service) == []
        assert metric(service, "facemask_alerts_duplicates_total") == 2
        # The 3rd unmasked frame raises the alert, but its picture is already gone.
        feed.frame([bare(PERSON_A)], keep_frame=False)
        wait_until(lambda: alerts_of(service), 10, "alert")
        (alert,) = alerts_of(service)
        assert not alert["has_snapshot"] and alert["snapshot_url"] is None
        assert (
            metric(service, "facemask_alert_snapshots_missing_total", {"camera_id": "lobby"}) == 1
        )
        response = api(service, f"/api/alerts/{alert['id']}/snapshot.jpg")
        assert response.status_code == 404 and "frame stream" in response.json()["detail"]
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 5, "still delivered")


class _NoAck(DetectionsConsumer):
    """Fault injection: the process dies between the commit and the XACK."""

    def _ack(self, acks: Any) -> None:
        return None


def test_crash_between_commit_and_ack_neither_loses_nor_duplicates(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = fast_settings(redis_server.url, tmp_path / "state")
    feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5)
    with monkeypatch.context() as patch:
        patch.setattr("services.alerts.service.DetectionsConsumer", _NoAck)
        with running(settings) as first:
            feed.frames(8, [bare(PERSON_A)])
            wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 10, "alert delivered")
            pending = redis_client.xpending(
                LAYOUT.detections(LAYOUT.partition_of("lobby")), "alerts"
            )
            assert pending["pending"] == 8  # committed, never acknowledged
            (alert,) = alerts_of(first)
    with running(settings) as second:
        wait_until(lambda: drained(redis_client), 10, "pending entries acknowledged")
        feed.frames(5, [bare(PERSON_A)])  # the same person, still unmasked: same track
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        time.sleep(0.5)
        assert [a["id"] for a in alerts_of(second)] == [alert["id"]]
        assert metric(second, "facemask_alerts_replayed_total") == 8
        assert metric(second, "facemask_alerts_detections_consumed_total") == 5
        assert redis_client.xlen(LAYOUT.alerts) == 1


def test_failed_commit_is_rolled_back_and_redone(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [1]
    real_commit = AlertStore.commit_batch

    def flaky_commit(self: AlertStore, alerts: Any, *args: Any, **kwargs: Any) -> Any:
        if alerts and failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real_commit(self, alerts, *args, **kwargs)

    monkeypatch.setattr(AlertStore, "commit_batch", flaky_commit)
    with running(fast_settings(redis_server.url, tmp_path / "state")) as service:
        feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5)
        feed.frames(10, [bare(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 10, "alert delivered")
        assert failures == [0] and metric(service, "facemask_alerts_batch_failures_total") == 1
        assert len(alerts_of(service)) == 1


# -- the sample clip: real frames, the real detector's detections ----------------------------

TOKEN = "zones-t0ken"


@pytest.mark.model
def test_the_clip_alerts_once_per_person_and_a_masked_poster_never(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    group4_clip: Clip,
    tmp_path: Path,
) -> None:
    """Four people unmasked at the start, the left man taking his mask off later, and the
    poster on the wall: with the default settings one alert per person and one for the
    mask-off moment; the poster alerts too, unless an ignore mask set through the API
    (token required, kept across a restart) covers it."""
    settings = fast_settings(
        redis_server.url,
        tmp_path / "state",
        api_token=TOKEN,
        rules={"grouped": {"group_window": 2.0}},
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = "/api/cameras/masked/zones"
    body = {"ignore": [{"name": "poster", "points": POSTER_MASK}]}
    with running(settings) as service:
        base = f"http://127.0.0.1:{service.port}"
        assert httpx.put(base + url, json=body, timeout=5.0).status_code == 401
        put = httpx.put(base + url, json=body, headers=auth, timeout=5.0)
        assert put.status_code == 200 and put.json()["source"] == "api", put.text

    with running(settings) as service:  # restarted: the mask was stored
        assert api(service, url, headers=auth).json()["ignore"] == body["ignore"]
        start = time.time() - 20
        feed_clip(redis_client, "masked", group4_clip, start)
        feed_clip(redis_client, "plain", group4_clip, start)
        feed_clip(redis_client, "grouped", group4_clip, start)
        wait_until(lambda: drained(redis_client), 30, "all entries consumed")
        for camera, poster in (("masked", False), ("plain", True)):
            answer = api(service, "/api/alerts", params={"camera_id": camera}, headers=auth)
            alerts = answer.json()["alerts"]
            found = describe_alerts([(a["ts"] - start, a["box"]) for a in alerts])
            assert found == expected_alerts(poster=poster), (camera, found)
            assert all(a["has_snapshot"] and a["violators"] == 1 for a in alerts)
            assert all(a["track_ids"] == [a["track_id"]] for a in alerts)
            assert all(a["message"].startswith("Person without a mask") for a in alerts)
        # A camera with a grouping window: everyone at the start in one alert.
        answer = api(service, "/api/alerts", params={"camera_id": "grouped"}, headers=auth)
        mask_off, grouped = answer.json()["alerts"]  # newest first
        assert grouped["violators"] == 5 and len(set(grouped["track_ids"])) == 5
        assert grouped["message"] == "5 people without a mask at grouped"
        assert grouped["track_ids"][0] == grouped["track_id"] == mask_off["track_id"]
        assert grouped["has_snapshot"] and mask_off["violators"] == 1
        ignored = "facemask_alerts_faces_ignored_total"
        frames = len(group4_clip.frames)
        masked_faces = {"camera_id": "masked", "reason": "ignore_mask"}
        # (counted just after the entries are acknowledged)
        wait_until(lambda: metric(service, ignored, masked_faces) == frames, 5, "ignored faces")
        assert metric(service, ignored, {"camera_id": "plain", "reason": "ignore_mask"}) == 0
        assert metric(service, "facemask_alerts_suppressed_total", {"camera_id": "plain"}) == 0


def test_entries_left_pending_by_a_dead_consumer_are_taken_over(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    key = LAYOUT.detections(LAYOUT.partition_of("lobby"))
    redis_client.xgroup_create(key, "alerts", id="$", mkstream=True)
    feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5)
    feed.frames(6, [bare(PERSON_A)])
    # Another alert service instance read them and died before acknowledging.
    taken = redis_client.xreadgroup("alerts", "alerts-dead", {key: ">"}, count=100)
    assert len(taken[0][1]) == 6
    settings = fast_settings(
        redis_server.url, tmp_path / "state", claim_idle=0.3, claim_interval=0.3
    )
    with running(settings) as service:
        wait_until(lambda: drained(redis_client), 10, "pending entries taken over")
        assert len(alerts_of(service)) == 1
        assert metric(service, "facemask_alerts_reclaimed_total") == 6


def test_redis_restart_is_survived(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    with running(fast_settings(redis_server.url, tmp_path / "state")) as service:
        feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5)
        feed.frames(3, [bare(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "first entries consumed")
        redis_server.stop()
        wait_until(lambda: not service.readiness()["redis"], 5, "not ready")
        time.sleep(0.5)
        redis_server.start()  # same port, data kept (append-only file)
        wait_until(lambda: all(service.readiness().values()), 15, "ready again")
        feed.frames(3, [bare(PERSON_A)])  # the same person: 6 unmasked frames in all
        wait_until(lambda: drained(redis_client), 10, "all entries consumed")
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 10, "alert delivered")
        assert len(alerts_of(service)) == 1
        assert metric(service, "facemask_alerts_redis_errors_total") >= 1


# -- supervision: dead loops, the fatal verdict, stalls -----------------------------------


class LoopKilled(BaseException):
    """Escapes every ``except Exception``: the loop's thread dies of it."""


def kill_next_batch(service: AlertService) -> None:
    """The consumer thread dies on its next batch (mid-batch, nothing committed)."""
    assert service.consumer is not None
    streams = service.consumer.streams
    real = streams.handler
    calls: list[int] = []

    def dying(batch: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise LoopKilled("consumer killed by the test")
        return real(batch)

    streams.handler = dying


def test_a_dead_consumer_loop_is_restarted_from_its_committed_state(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    settings = fast_settings(redis_server.url, tmp_path / "state", watchdog_interval=0.05)
    with running(settings) as service:
        feed = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5)
        feed.frames(3, [bare(PERSON_A)])
        wait_until(lambda: drained(redis_client), 10, "first entries consumed")
        kill_next_batch(service)
        feed.frames(3, [bare(PERSON_A)])  # the same person: 6 unmasked frames in all
        wait_until(lambda: not service.readiness()["supervisor"], 5, "dead loop seen")
        assert api(service, "/readyz").status_code == 503
        wait_until(lambda: drained(redis_client), 10, "entries of the killed batch consumed")
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 10, "alert delivered")
        assert len(alerts_of(service)) == 1
        assert metric(service, "facemask_alerts_loop_restarts_total", {"loop": "detections"}) == 1
        assert metric(service, "facemask_alerts_loop_deaths_total", {"loop": "detections"}) == 1
        wait_until(lambda: api(service, "/readyz").status_code == 200, 5, "ready again")
        assert service.supervisor.verdict is None


def test_a_loop_dying_beyond_the_limit_is_a_verdict_503_and_exit_70(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    from services.alerts.__main__ import serve

    settings = fast_settings(
        redis_server.url, tmp_path / "state", watchdog_interval=0.05, restart_limit=0
    )
    service = AlertService(settings, AlertMetrics())
    service.start()
    stop = threading.Event()
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(serve(service, stop)))
    try:
        kill_next_batch(service)
        Feeder(redis_client, "lobby", sample_jpeg).frames(1, [bare(PERSON_A)])
        wait_until(service.supervisor.fatal.is_set, 5, "verdict")
        response = api(service, "/readyz")
        assert response.status_code == 503 and response.json()["checks"]["supervisor"] is False
        wait_until(lambda: metric(service, "facemask_alerts_ready") == 0, 5, "ready gauge 0")
        runner.start()
        runner.join(10.0)
        assert code == [70]
    finally:
        stop.set()
        if not runner.is_alive() and not code:
            service.stop()


def test_a_blocked_consumer_is_a_stall_on_the_injected_clock_then_ready_again(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    now = [1000.0]
    settings = fast_settings(
        redis_server.url, tmp_path / "state", watchdog_interval=60.0, stall_timeout=10.0
    )
    service = AlertService(settings, AlertMetrics())
    service.supervisor.clock = lambda: now[0]
    service.start()
    release = threading.Event()
    try:
        assert service.consumer is not None
        streams = service.consumer.streams
        real = streams.handler

        def blocked(batch: Any) -> Any:
            release.wait(20.0)
            return real(batch)

        streams.handler = blocked
        Feeder(redis_client, "lobby", sample_jpeg).frames(2, [masked(PERSON_A)])
        wait_until(lambda: streams.taken >= 1, 5, "entries taken")
        now[0] += 9.0
        assert service.supervisor.check(), "within the stall timeout"
        now[0] += 1.0
        assert not service.supervisor.check()
        assert service.supervisor.stalled() == ["detections"]
        response = api(service, "/readyz")
        assert response.status_code == 503 and response.json()["checks"]["supervisor"] is False
        assert streams.worker.alive and service.readiness()["consumer"], "alive but stuck"
        release.set()
        wait_until(lambda: drained(redis_client), 10, "entries consumed after the release")
        now[0] += 1.0
        assert service.supervisor.check()
        assert api(service, "/readyz").status_code == 200
        assert metric(service, "facemask_alerts_stalls_total", {"watch": "detections"}) == 1
        assert metric(service, "facemask_alerts_stalled", {"watch": "detections"}) == 0
    finally:
        release.set()
        assert service.stop()


def test_a_full_disk_raises_the_alert_without_its_picture_and_counts_it(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("services.alerts.snapshots.SnapshotStore.save", disk_full)
    settings = fast_settings(redis_server.url, tmp_path / "state")
    with running(settings) as service:
        Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 5).frames(
            8, [bare(PERSON_A)]
        )
        wait_until(lambda: redis_client.xlen(LAYOUT.alerts) == 1, 10, "alert delivered")
        wait_until(lambda: drained(redis_client), 10, "every entry consumed")
        (alert,) = alerts_of(service)
        assert alert["snapshot_url"] is None
        labels = {"camera_id": "lobby"}
        assert metric(service, "facemask_alert_snapshots_missing_total", labels) == 1
        assert service.readiness()["consumer"]  # the service goes on
