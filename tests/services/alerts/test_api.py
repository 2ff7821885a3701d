"""The HTTP API: auth, parameters, pagination, pictures, SSE, health, metrics, OpenAPI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.service import AlertService
from tests.services.alerts.conftest import (
    PERSON_A,
    PERSON_B,
    Feeder,
    bare,
    drained,
    fast_settings,
    masked,
    metric,
    register_camera,
    running,
)

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def service(
    redis_server: RedisProcess, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[AlertService]:
    settings = fast_settings(
        redis_server.url, tmp_path / "state", api_token=TOKEN, rule_k=2, rule_n=3, cooldown=0.0
    )
    with running(settings) as svc:
        yield svc


def url(service: AlertService, path: str) -> str:
    return f"http://127.0.0.1:{service.port}{path}"


def get(service: AlertService, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.get(url(service, path), timeout=5.0, **kwargs)


def make_alerts(
    client: redis.Redis, jpeg: tuple[bytes, int, int], cameras: list[str], start: float
) -> None:
    """One alert per camera (K=2 of N=3), one second apart."""
    for i, camera in enumerate(cameras):
        Feeder(client, camera, jpeg, start_ts=start + i).frames(2, [bare(PERSON_A)])


def test_token_is_required_everywhere_but_health(service: AlertService) -> None:
    for path in ("/healthz", "/readyz"):
        assert httpx.get(url(service, path)).status_code == 200
    for path in ("/api/cameras", "/api/alerts", "/metrics", "/openapi.json", "/static/app.js"):
        missing = httpx.get(url(service, path))
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["detail"] == "missing bearer token"
        wrong = httpx.get(url(service, path), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
        assert get(service, path).status_code == 200, path
    assert httpx.get(url(service, f"/api/alerts?token={TOKEN}")).status_code == 200
    assert httpx.get(url(service, "/api/alerts?token=wrong")).status_code == 401


def test_dashboard_sign_in_sets_a_cookie(service: AlertService) -> None:
    page = httpx.get(url(service, "/"))
    assert (
        page.status_code == 401
        and "<form" in page.text
        and "text/html" in page.headers["content-type"]
    )
    wrong = httpx.get(url(service, "/?token=nope"))
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    with httpx.Client(base_url=url(service, "")) as browser:
        signed = browser.get(f"/?token={TOKEN}")
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        assert "HttpOnly" in signed.headers["set-cookie"]
        assert browser.get("/").status_code == 200
        assert browser.get("/api/cameras").status_code == 200
        assert browser.get("/static/app.css").status_code == 200


def test_bad_parameters_get_clear_4xx(service: AlertService) -> None:
    def problem(path: str, status: int, *words: str) -> None:
        response = get(service, path)
        assert response.status_code == status, (path, response.text)
        message = response.json()["message"]
        for word in words:
            assert word in message, (path, message)

    problem("/api/alerts?limit=0", 422, "'limit'", "greater than or equal to 1")
    problem("/api/alerts?limit=501", 422, "'limit'", "less than or equal to 500")
    problem("/api/alerts?limit=ten", 422, "'limit'", "integer")
    problem("/api/alerts?since=yesterday", 400, "since", "ISO-8601", "yesterday")
    problem("/api/alerts?until=-5", 400, "until", ">= 0")
    problem("/api/alerts?since=2024-05-02T00:00:00Z&until=2024-05-01", 400, "since", "until")
    problem("/api/alerts?cursor=bogus", 400, "cursor")
    problem("/api/alerts/not-an-id", 422, "alert_id")
    problem(f"/api/alerts/{'0' * 32}", 404, "not found")
    problem(f"/api/alerts/{'0' * 32}/snapshot.jpg", 404, "not found")
    problem("/api/cameras/nope/latest.jpg", 404, "unknown camera")
    problem("/api/events?last_event_id=-1", 422, "last_event_id")
    problem("/api/nothing", 404, "Not Found")
    response = get(service, "/api/events", headers={**AUTH, "Last-Event-ID": "x"})
    assert response.status_code == 400 and "Last-Event-ID" in response.json()["message"]


def test_alert_history_pages_and_filters(
    service: AlertService, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    start = float(int(time.time()) - 30)
    cameras = [f"cam{i % 3}" for i in range(7)]
    make_alerts(redis_client, sample_jpeg, cameras[:3], start)
    make_alerts(redis_client, sample_jpeg, ["cam0", "cam1", "cam2"], start + 10)
    make_alerts(redis_client, sample_jpeg, ["cam0"], start + 20)
    wait_until(lambda: drained(redis_client), 10, "all entries consumed")
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = get(service, "/api/alerts", params=params).json()
        pages.append([a["id"] for a in body["alerts"]])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    every = [i for p in pages for i in p]
    assert len(set(every)) == 7
    cam0 = get(service, "/api/alerts", params={"camera_id": "cam0"}).json()["alerts"]
    assert len(cam0) == 3 and {a["camera_id"] for a in cam0} == {"cam0"}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 10))
    recent = get(service, "/api/alerts", params={"since": iso}).json()["alerts"]
    assert len(recent) == 4
    window = get(
        service, "/api/alerts", params={"since": str(start + 10), "until": str(start + 20)}
    ).json()["alerts"]
    assert len(window) == 3 and all(start + 10 <= a["ts"] < start + 20 for a in window)
    one = get(service, f"/api/alerts/{every[0]}").json()
    assert one["id"] == every[0] and one["deliveries"][0]["sink"] == "redis"


def test_latest_frame_has_etag_and_304(
    service: AlertService, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    register_camera(redis_client, "lobby")
    assert get(service, "/api/cameras/lobby/latest.jpg").status_code == 404  # no frame yet
    Feeder(redis_client, "lobby", sample_jpeg).frames(2, [masked(PERSON_A), bare(PERSON_B)])
    wait_until(lambda: drained(redis_client), 10, "all entries consumed")
    first = get(service, "/api/cameras/lobby/latest.jpg")
    assert first.status_code == 200 and first.content[:2] == b"\xff\xd8"
    etag = first.headers["etag"]
    again = get(service, "/api/cameras/lobby/latest.jpg", headers={**AUTH, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    cams = get(service, "/api/cameras").json()["cameras"]
    assert [c["id"] for c in cams] == ["lobby"] and cams[0]["status"] == "up"


def test_server_sent_events_stream_new_alerts_and_resume(
    service: AlertService, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    events: list[dict[str, Any]] = []
    opened = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(timeout=10.0) as client,
            client.stream("GET", url(service, f"/api/events?token={TOKEN}")) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            opened.set()
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif line == "" and "data" in event:
                    events.append(event)
                    event = {}
                    if len(events) == 2:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(5)
    time.sleep(0.2)
    make_alerts(redis_client, sample_jpeg, ["lobby", "door"], time.time() - 5)
    thread.join(10)
    assert [e["event"] for e in events] == ["alert", "alert"]
    assert {e["data"]["camera_id"] for e in events} == {"lobby", "door"}
    assert all(e["id"] == e["data"]["seq"] for e in events)
    # Reconnecting with Last-Event-ID replays what came after it.
    first = min(e["id"] for e in events)
    with (
        httpx.Client(timeout=10.0) as client,
        client.stream(
            "GET", url(service, "/api/events"), headers={**AUTH, "Last-Event-ID": str(first)}
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["seq"] == first + 1
                break


def test_health_metrics_and_openapi(service: AlertService, redis_server: RedisProcess) -> None:
    ready = httpx.get(url(service, "/readyz")).json()
    assert ready == {
        "ready": True,
        "checks": {"redis": True, "consumer": True, "http": True, "supervisor": True},
    }
    text = get(service, "/metrics").text
    for name in (
        "facemask_alerts_outbox_depth",
        "facemask_alerts_detections_consumed_total",
        "facemask_alerts_ready",
    ):
        assert name in text
    schema = get(service, "/openapi.json").json()
    for path in (
        "/api/cameras",
        "/api/alerts",
        "/api/alerts/{alert_id}",
        "/api/alerts/{alert_id}/snapshot.jpg",
        "/api/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "/docs" not in schema["paths"] and httpx.get(url(service, "/docs")).status_code in (
        401,
        404,
    )
    redis_server.stop()
    not_ready = httpx.get(url(service, "/readyz"))
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["redis"] is False
    assert httpx.get(url(service, "/healthz")).status_code == 200


def test_hostile_entries_and_ids_leave_the_service_bounded_and_serving(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    """Issue 13: a frame far in the future, camera ids with a new line, bidi characters or
    '/' and a flood of new ids: dead-lettered with a reason and counted, never a crash;
    the camera list, its pages and /metrics stay bounded; valid cameras keep working."""
    settings = fast_settings(
        redis_server.url, tmp_path / "state", api_token=TOKEN, rule_k=2, rule_n=3,
        cooldown=0.0, max_cameras=8, metrics_port=0,
    )  # fmt: skip
    svc = AlertService(settings)  # its metrics sized by the settings
    svc.start()
    try:
        _hostile_scenario(svc, redis_client, sample_jpeg)
    finally:
        assert svc.stop()


def _hostile_scenario(
    svc: AlertService, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    layout = StreamLayout()
    now = time.time()
    future = Feeder(redis_client, "clock-ahead", sample_jpeg, start_ts=now + 86400 * 365)
    future.frames(2, [bare(PERSON_A)])
    register_camera(redis_client, "cam.1-b_c", name="Valid")  # registered: listed first
    good = Feeder(redis_client, "cam.1-b_c", sample_jpeg, start_ts=now - 2)
    good.frames(3, [bare(PERSON_A)])
    template = good.entries[0][1].to_fields()
    hostile = ["bad\nid", "\u202eevil", "a/b", "_other", "x" * 65]
    for camera_id in hostile:
        key = layout.detections(layout.partition_of(camera_id))
        redis_client.xadd(key, {**template, "camera": camera_id})  # type: ignore[arg-type]
        redis_client.sadd(layout.cameras, camera_id)
    for i in range(40):  # a flood of new (valid) ids
        Feeder(redis_client, f"flood-{i:02d}", sample_jpeg, start_ts=now - 1).frames(
            1, [masked(PERSON_B)]
        )
    assert wait_until(lambda: drained(redis_client), timeout=20)

    assert metric(svc, "facemask_alerts_deadletter_total", {"reason": "bad_timestamp"}) == 2
    assert metric(svc, "facemask_alerts_deadletter_total", {"reason": "bad_camera"}) == 5
    letters = redis_client.xrange(layout.alerts_deadletter)
    assert (
        sorted(f[b"reason"].decode() for _, f in letters)
        == ["bad_camera"] * 5 + ["bad_timestamp"] * 2
    )

    listed, cursor = [], None
    while True:
        page = get(svc, "/api/cameras?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200
        listed += [c["id"] for c in page.json()["cameras"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(listed) == 8 and "cam.1-b_c" in listed  # max_cameras, valid ids only
    assert listed == sorted(listed)
    picture = get(svc, "/api/cameras/cam.1-b_c/latest.jpg")
    assert picture.status_code == 200 and picture.content.startswith(b"\xff\xd8")
    assert get(svc, "/api/cameras/a%2Fb/latest.jpg").status_code == 404
    assert get(svc, "/api/cameras/bad%0Aid/latest.jpg").status_code == 422
    assert get(svc, "/api/alerts?camera_id=cam.1-b_c").json()["count"] == 1

    body = get(svc, "/metrics").text
    labels = {
        line.split('camera_id="', 1)[1].split('"', 1)[0]
        for line in body.splitlines()
        if 'camera_id="' in line
    }
    assert len(labels) <= 9 and "_other" in labels  # 8 cameras + the overflow
    assert not any("\n" in v or "\u202e" in v or "/" in v for v in labels)
    assert get(svc, "/readyz").status_code == 200


def test_latest_frame_that_lies_about_its_size_is_refused_and_counted(
    service: AlertService, redis_client: redis.Redis, sample_jpeg: tuple[bytes, int, int]
) -> None:
    jpeg, width, height = sample_jpeg
    register_camera(redis_client, "door")
    Feeder(redis_client, "door", (jpeg, width * 4, height * 4)).frames(1, [masked(PERSON_A)])
    wait_until(lambda: drained(redis_client), 10, "all entries consumed")
    picture = get(service, "/api/cameras/door/latest.jpg")
    assert picture.status_code == 404, picture.text  # no picture rather than a wrong one
    labels = {"where": "latest", "reason": "size_mismatch"}
    assert metric(service, "facemask_alerts_frames_rejected_total", labels) == 1
