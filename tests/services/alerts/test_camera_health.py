"""Camera health end to end on a real redis-server: the board's states over time (an
injected clock, the registry written as an ingest node writes it, real frames and
detections entries), ``has_frame``, forgetting stale cameras and retention; then the real
alert service: a registered camera whose detections stop turns ``not_analysed`` on the
API, the gauge and ``/api/health`` (``/readyz`` stays ready), ``DELETE
/api/cameras/{id}`` with and without a token, and retention in the maintenance loop."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facemask.contracts.registry import registered_ids
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.cameras import (
    CameraActiveError,
    CameraBoard,
    CameraDirectory,
    HealthRules,
    UnknownCameraError,
)
from services.alerts.engine import AlertEngine
from services.alerts.metrics import AlertMetrics
from services.alerts.rules import Rule
from services.alerts.service import AlertService
from services.alerts.snapshots import LatestFrames
from services.alerts.store import AlertStore
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    Feeder,
    drained,
    fast_settings,
    masked,
)

T0 = 1_800_000_000.0
RULES = HealthRules(analysis_timeout=5.0, frame_timeout=10.0, online_window=15.0)


def heartbeat(
    client: redis.Redis,
    camera_id: str,
    *,
    at: float,
    frame_age: float | None = 0.2,
    ttl: int = 60,
    **fields: str,
) -> None:
    """Write the camera's registry hash as a node's heartbeat at ``at`` (its clock) does;
    ``frame_age`` None: no frame published yet."""
    key = LAYOUT.camera(camera_id)
    values = {
        "id": camera_id,
        "name": camera_id.title(),
        "status": "up",
        "fps": "5",
        "last_seen": f"{at:.3f}",
        "last_frame_ts": "" if frame_age is None else f"{at - frame_age:.3f}",
        "frames_published": "0" if frame_age is None else "50",
        "last_error": "",
        "node": "node-1",
        **fields,
    }
    client.hset(key, mapping=values)  # type: ignore[arg-type]
    client.expire(key, ttl)
    client.sadd(LAYOUT.cameras, camera_id)


@dataclass
class Board:
    """A board over real Redis and SQLite, its clock in ``now``."""

    board: CameraBoard
    engine: AlertEngine
    store: AlertStore
    metrics: AlertMetrics
    client: redis.Redis
    feeders: dict[str, Feeder]
    renders: list[int]
    now: float = T0

    def clock(self) -> float:
        return self.now

    def state(self, camera_id: str) -> dict[str, Any]:
        return next(c for c in self.board.cameras() if c["id"] == camera_id)

    def detections(self, camera_id: str, jpeg: tuple[bytes, int, int], **kw: Any) -> str:
        """A frame and its detections entry (status ok) processed now; its frame sid."""
        feed = self.feeders.setdefault(camera_id, Feeder(self.client, camera_id, jpeg))
        sid, entry = feed.frame([masked(PERSON_A)], **kw)
        self.engine.process(LAYOUT.detections(LAYOUT.partition_of(camera_id)), sid, entry)
        self.board.record([entry])
        return entry.frame_sid

    def gauge(self, camera_id: str, state: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "facemask_alerts_camera_state", {"camera_id": camera_id, "state": state}
        )


@pytest.fixture()
def board(redis_client: redis.Redis, tmp_path: Path) -> Iterator[Board]:
    store = AlertStore(tmp_path / "state")
    engine = AlertEngine(Rule(), compliance_window=30.0)
    metrics = AlertMetrics()
    renders: list[int] = []
    pictures = LatestFrames(redis_client, min_interval=0.0, on_render=lambda: renders.append(1))
    directory = CameraDirectory(redis_client, LAYOUT, store, ttl=0.0)  # type: ignore[arg-type]
    built = Board(None, engine, store, metrics, redis_client, {}, renders)  # type: ignore[arg-type]
    built.board = CameraBoard(
        directory,
        engine,
        store,
        pictures,
        LAYOUT,
        online_window=RULES.online_window,
        clock=built.clock,
        rules=RULES,
        retention=7 * 86400.0,
        metrics=metrics,
    )
    yield built
    store.close()


def test_detections_stopping_turn_the_camera_not_analysed_then_live_again(
    board: Board,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    heartbeat(redis_client, "lobby", at=board.now)
    board.detections("lobby", sample_jpeg)
    live = board.state("lobby")
    assert (live["state"], live["online"], live["has_frame"]) == ("live", True, True)
    assert live["state_since"] is None  # live since before the board looked: unknown
    assert (board.gauge("lobby", "live"), board.gauge("lobby", "not_analysed")) == (1, 0)
    stopped = board.now
    board.now += 5.0  # the node keeps publishing frames; no detections entry arrives
    heartbeat(redis_client, "lobby", at=board.now)
    assert board.state("lobby")["state"] == "live"  # exactly the timeout
    board.now += 1.0
    heartbeat(redis_client, "lobby", at=board.now)
    with caplog.at_level(logging.INFO, logger="services.alerts.cameras"):
        quiet = board.state("lobby")
    assert quiet["state"] == "not_analysed" and quiet["online"] is True
    assert quiet["state_reason"] == "no detections for 6 s while frames arrive"
    assert quiet["state_since"] == stopped and quiet["has_frame"] is True  # the last picture
    assert (board.gauge("lobby", "live"), board.gauge("lobby", "not_analysed")) == (0, 1)
    (change,) = [r for r in caplog.records if r.getMessage() == "camera state changed"]
    assert (change.camera_id, change.previous, change.state) == (  # type: ignore[attr-defined]
        "lobby",
        "live",
        "not_analysed",
    )
    board.now += 30.0
    heartbeat(redis_client, "lobby", at=board.now)
    later = board.state("lobby")
    assert later["state_since"] == stopped and later["state_reason"].startswith(
        "no detections for 36 s"
    )
    board.detections("lobby", sample_jpeg)  # inference is back
    back = board.state("lobby")
    assert (back["state"], back["state_since"]) == ("live", board.now)
    assert board.gauge("lobby", "live") == 1


def test_frames_that_start_to_flow_get_time_for_their_first_detections(
    board: Board, redis_client: redis.Redis
) -> None:
    heartbeat(redis_client, "door", at=board.now, status="reconnecting", last_error="EOF")
    first = board.state("door")
    assert (first["state"], first["state_reason"], first["online"]) == ("no_frames", "EOF", False)
    assert first["has_frame"] is False and first["last_error"] == "EOF"
    board.now += 100.0  # the source connects; frames flow, inference never answered
    heartbeat(redis_client, "door", at=board.now)
    connected = board.state("door")
    assert (connected["state"], connected["state_since"]) == ("live", board.now)
    board.now += 6.0
    heartbeat(redis_client, "door", at=board.now)
    assert board.state("door")["state"] == "not_analysed"
    heartbeat(redis_client, "door", at=board.now, frame_age=11.0)  # the source froze
    frozen = board.state("door")
    assert (frozen["state"], frozen["state_reason"]) == ("no_frames", "no frame published for 11 s")
    redis_client.delete(LAYOUT.camera("door"))  # the node died: its hash expired
    gone = board.state("door")
    assert (gone["state"], gone["status"]) == ("offline", "offline")
    assert gone["state_reason"].startswith("no heartbeat from its ingest node (last seen")
    assert board.gauge("door", "offline") == 1 and board.gauge("door", "no_frames") == 0


def test_has_frame_says_whether_the_latest_picture_answers(
    board: Board, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    heartbeat(redis_client, "lobby", at=board.now)
    assert board.state("lobby")["has_frame"] is False  # no detections entry yet
    board.detections("lobby", sample_jpeg, keep_frame=False)  # its frame already trimmed
    assert board.state("lobby")["has_frame"] is False
    assert board.board.latest_picture("lobby") is None  # latest.jpg: 404, as announced
    assert board.state("lobby")["has_frame"] is False and board.renders == []
    board.detections("lobby", sample_jpeg)
    assert board.state("lobby")["has_frame"] is True and len(board.renders) == 1
    for _ in range(3):  # listing again renders nothing more
        assert board.state("lobby")["has_frame"] is True
    assert len(board.renders) == 1
    board.detections("lobby", sample_jpeg, keep_frame=False)  # a newer frame is gone:
    assert board.state("lobby")["has_frame"] is True  # the previous picture is kept
    assert board.board.latest_picture("lobby") is not None


def test_forgetting_a_stale_camera(
    board: Board, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    heartbeat(redis_client, "old", at=board.now, name="Old hall")
    heartbeat(redis_client, "lobby", at=board.now)
    board.detections("old", sample_jpeg)
    board.store.commit_batch([], [], board.engine.take_dirty(), {})
    assert board.state("old")["name"] == "Old hall"
    with pytest.raises(CameraActiveError, match="heart-beats"):
        board.board.forget("old")
    redis_client.delete(LAYOUT.camera("old"))  # its node stopped heart-beating
    board.now += 60.0
    assert board.state("old")["state"] == "offline"
    assert "old" in board.store.camera_info() and board.gauge("old", "offline") == 1
    board.board.forget("old")
    assert "old" not in registered_ids(redis_client, LAYOUT)[0]
    assert "old" not in board.store.camera_info()
    assert all(s["camera_id"] != "old" for s in board.store.load_state()[0])
    assert "old" not in board.engine.camera_ids() and board.engine.latest("old") is None
    assert [c["id"] for c in board.board.cameras()] == ["lobby"]
    assert board.gauge("old", "offline") is None  # its series is gone
    assert (
        board.metrics.registry.get_sample_value(
            "facemask_alerts_cameras_removed_total", {"reason": "api"}
        )
        == 1
    )
    with pytest.raises(UnknownCameraError):
        board.board.forget("old")
    with pytest.raises(UnknownCameraError):
        board.board.forget("never")
    # A camera its node stopped (final heartbeat "stopped", hash not yet expired): gone too.
    heartbeat(redis_client, "lobby", at=board.now, status="stopped")
    board.board.forget("lobby")
    assert not redis_client.exists(LAYOUT.camera("lobby"))
    # Outside the registry: not while its detections arrive (within online_window).
    board.detections("visitor", sample_jpeg)
    with pytest.raises(CameraActiveError, match="detections arrive"):
        board.board.forget("visitor")
    board.now += 16.0
    board.board.forget("visitor")
    assert board.board.cameras() == []


def test_cameras_offline_longer_than_the_retention_drop_off(
    board: Board, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    for camera_id in ("old", "fresh"):
        heartbeat(redis_client, camera_id, at=board.now, ttl=3600)
    board.detections("visitor", sample_jpeg)  # outside the registry
    redis_client.sadd(LAYOUT.cameras, "attic")  # a member nobody saw: no time at all
    board.board.cameras()  # the directory sees old online (its last_seen is stored)
    redis_client.delete(LAYOUT.camera("old"))
    board.now += 3600.0
    assert board.board.expire() == []  # offline for an hour only; attic noticed now
    noticed = board.now
    board.now = T0 + 7 * 86400.0 - 1
    heartbeat(redis_client, "fresh", at=board.now)  # still heart-beating: stays
    assert board.board.expire() == []
    board.now += 2.0
    heartbeat(redis_client, "fresh", at=board.now)
    assert board.board.expire() == ["old", "visitor"]
    assert [c["id"] for c in board.board.cameras()] == ["attic", "fresh"]
    board.now = noticed + 7 * 86400.0 + 1
    heartbeat(redis_client, "fresh", at=board.now)
    assert board.board.expire() == ["attic"]
    assert (
        board.metrics.registry.get_sample_value(
            "facemask_alerts_cameras_removed_total", {"reason": "retention"}
        )
        == 3
    )
    assert "old" not in board.store.camera_info()  # forgotten everywhere


# -- the real service ----------------------------------------------------------------------


def api(service: AlertService, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{service.port}{path}", timeout=5.0, **kwargs)


def camera(service: AlertService, camera_id: str, **kwargs: Any) -> dict[str, Any]:
    response = api(service, "GET", "/api/cameras", **kwargs)
    assert response.status_code == 200, response.text
    return next(c for c in response.json()["cameras"] if c["id"] == camera_id)


@pytest.fixture()
def skewed(
    redis_server: RedisProcess, tmp_path: Path
) -> Iterator[tuple[AlertService, list[float]]]:
    """The alert service whose camera board runs on the wall clock plus ``skew[0]``."""
    skew = [0.0]
    service = AlertService(fast_settings(redis_server.url, tmp_path / "state"), AlertMetrics())
    service.board.clock = lambda: time.time() + skew[0]
    service.start()
    try:
        yield service, skew
    finally:
        assert service.stop()


def test_the_service_shows_not_analysed_when_detections_stop(
    skewed: tuple[AlertService, list[float]],
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
) -> None:
    service, skew = skewed
    feed = Feeder(redis_client, "lobby", sample_jpeg)
    heartbeat(redis_client, "lobby", at=time.time())
    feed.frames(3, [masked(PERSON_A)])
    wait_until(lambda: drained(redis_client), 10, "the entries consumed (and noted)")
    live = camera(service, "lobby")
    assert (live["state"], live["name"], live["online"]) == ("live", "Lobby", True)
    assert live["has_frame"] is True
    # Inference stops: frames keep coming (the heartbeat says so), no detections entry.
    skew[0] += 6.0
    heartbeat(redis_client, "lobby", at=time.time())
    quiet = camera(service, "lobby")
    assert (quiet["state"], quiet["online"], quiet["status"]) == ("not_analysed", True, "up")
    assert re.fullmatch(r"no detections for [6-9] s while frames arrive", quiet["state_reason"])
    health = api(service, "GET", "/api/health").json()
    assert health["status"] == "degraded" and health["ready"] is True
    assert health["cameras"] == {"live": 0, "not_analysed": 1, "no_frames": 0, "offline": 0}
    assert [(p["id"], p["state"]) for p in health["problems"]] == [("lobby", "not_analysed")]
    assert api(service, "GET", "/readyz").status_code == 200  # the service itself works

    def gauge(state: str) -> float | None:
        return service.metrics.registry.get_sample_value(
            "facemask_alerts_camera_state", {"camera_id": "lobby", "state": state}
        )

    wait_until(lambda: gauge("not_analysed") == 1, 5, "the maintenance loop's gauge")
    assert gauge("live") == 0
    assert 'facemask_alerts_camera_state{camera_id="lobby",state="not_analysed"} 1.0' in (
        api(service, "GET", "/metrics").text
    )
    feed.frames(2, [masked(PERSON_A)])  # inference is back
    wait_until(lambda: camera(service, "lobby")["state"] == "live", 10, "lobby live again")
    assert api(service, "GET", "/api/health").json()["status"] == "ok"


def test_stale_cameras_are_deleted_through_the_api_and_dropped_by_retention(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    heartbeat(redis_client, "lobby", at=time.time())
    heartbeat(redis_client, "gone", at=time.time())
    settings = fast_settings(redis_server.url, tmp_path / "a", camera_retention=60.0)
    service = AlertService(settings, AlertMetrics())
    skew = [0.0]
    service.board.clock = lambda: time.time() + skew[0]
    service.start()
    try:
        Feeder(redis_client, "gone", sample_jpeg).frames(2, [masked(PERSON_A)])
        wait_until(lambda: camera(service, "gone")["has_frame"], 10, "gone analysed")
        conflict = api(service, "DELETE", "/api/cameras/gone")
        assert conflict.status_code == 409 and "heart-beats" in conflict.json()["message"]
        redis_client.delete(LAYOUT.camera("gone"))  # its node is gone for good
        wait_until(lambda: camera(service, "gone")["state"] == "offline", 5, "gone offline")
        mask = {"name": "m", "points": [[0, 0], [0.5, 0], [0.5, 0.5]]}
        put = api(service, "PUT", "/api/cameras/gone/zones", json={"ignore": [mask]})
        assert put.status_code == 200, put.text
        assert api(service, "DELETE", "/api/cameras/gone?zones=true").status_code == 204
        assert api(service, "GET", "/api/cameras/gone/zones").json()["source"] == "none"
        assert [c["id"] for c in api(service, "GET", "/api/cameras").json()["cameras"]] == ["lobby"]
        assert api(service, "GET", "/api/cameras/gone/latest.jpg").status_code == 404
        assert api(service, "DELETE", "/api/cameras/gone").status_code == 404
        assert api(service, "DELETE", "/api/cameras/nope").status_code == 404
        assert api(service, "DELETE", "/api/cameras/bad%20id").status_code == 422
        assert not redis_client.sismember(LAYOUT.cameras, "gone")
        # Retention: lobby's node stops; a minute later it is forgotten by itself.
        redis_client.delete(LAYOUT.camera("lobby"))
        wait_until(lambda: camera(service, "lobby")["state"] == "offline", 5, "lobby offline")
        skew[0] += 61.0
        wait_until(
            lambda: api(service, "GET", "/api/cameras").json()["cameras"] == [],
            5,
            "lobby dropped by retention",
        )
        removed = {
            reason: service.metrics.registry.get_sample_value(
                "facemask_alerts_cameras_removed_total", {"reason": reason}
            )
            for reason in ("api", "retention")
        }
        assert removed == {"api": 1, "retention": 1}
    finally:
        assert service.stop()
    # With a token the DELETE is a write like any other: 401 without it.
    heartbeat(redis_client, "old", at=time.time(), ttl=1)
    redis_client.delete(LAYOUT.camera("old"))
    token = "t0ken-for-tests"
    with_token = fast_settings(redis_server.url, tmp_path / "b", api_token=token)
    service = AlertService(with_token, AlertMetrics())
    service.start()
    try:
        assert api(service, "DELETE", "/api/cameras/old").status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert api(service, "DELETE", "/api/cameras/old", headers=bearer).status_code == 204
        assert not redis_client.sismember(LAYOUT.cameras, "old")
    finally:
        assert service.stop()
