"""Alert routes over a real store: the JSON of each alert, pages, filters, deliveries,
pictures, and the 4xx answers."""

from __future__ import annotations

from typing import Any

import pytest

from services.alerts.api.models import AlertOut
from services.alerts.store import DELIVERED
from tests.services.alerts.api.conftest import NOW, Api


def test_history_shows_each_alert_as_stored(api: Api) -> None:
    plain = api.add_alert("a" * 32, ts=NOW - 10)
    pictured = api.add_alert(
        "b" * 32,
        "door",
        NOW,
        picture=True,
        rule={"k": 5, "n": 8, "min_score": 0.6, "min_face": 24, "cooldown": 30.0},
        camera_name="Door",
        place="Back",
    )
    body = api.client.get("/api/alerts").json()
    assert body["count"] == 2 and body["next_cursor"] is None
    # Exactly the record's JSON plus the picture URLs: nothing dropped, renamed or added.
    assert body["alerts"] == [AlertOut.fields_of(pictured), AlertOut.fields_of(plain)]
    first = body["alerts"][0]
    assert first["snapshot_url"] == f"/api/alerts/{'b' * 32}/snapshot.jpg"
    assert first["thumbnail_url"] == f"/api/alerts/{'b' * 32}/thumbnail.jpg"
    assert body["alerts"][1]["snapshot_url"] is None and body["alerts"][1]["rule"] == {}


def test_pages_and_filters(api: Api) -> None:
    for i in range(7):
        api.add_alert(f"{i:032x}", f"cam{i % 3}", NOW + i)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/api/alerts", params=params).json()
        seen += [a["id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"{i:032x}" for i in reversed(range(7))]
    cam0 = api.client.get("/api/alerts", params={"camera_id": "cam0"}).json()["alerts"]
    assert [a["ts"] for a in cam0] == [NOW + 6, NOW + 3, NOW]
    window = api.client.get("/api/alerts", params={"since": NOW + 2, "until": NOW + 4}).json()
    assert [a["ts"] for a in window["alerts"]] == [NOW + 3, NOW + 2]
    iso = api.client.get("/api/alerts", params={"since": "2024-05-01T12:00:05Z"}).json()
    assert [a["ts"] for a in iso["alerts"]] == [NOW + 6, NOW + 5]


def test_one_alert_with_its_deliveries(api: Api) -> None:
    stored = api.add_alert("a" * 32)
    (row,) = api.store.due("webhook", NOW + 10)
    api.store.mark_retry(row.row_id, NOW + 20, "HTTP 503")
    pending = api.client.get(f"/api/alerts/{'a' * 32}").json()
    assert pending == {
        **AlertOut.fields_of(stored),
        "deliveries": [
            {
                "sink": "webhook",
                "status": "pending",
                "attempts": 1,
                "last_error": "HTTP 503",
                "next_attempt": NOW + 20,
                "done_at": None,
            }
        ],
    }
    api.store.mark_delivered(row.row_id, NOW + 21)
    (done,) = api.client.get(f"/api/alerts/{'a' * 32}").json()["deliveries"]
    assert done["status"] == DELIVERED and done["next_attempt"] is None
    assert done["done_at"] == NOW + 21


def test_pictures(api: Api) -> None:
    pictured = api.add_alert("a" * 32, picture=True)
    api.add_alert("b" * 32)
    for kind, relative in (("snapshot", pictured.snapshot), ("thumbnail", pictured.thumbnail)):
        picture = api.client.get(f"/api/alerts/{'a' * 32}/{kind}.jpg")
        assert picture.status_code == 200, kind
        assert picture.content == (api.snapshots.dir / str(relative)).read_bytes()
        assert picture.headers["content-type"] == "image/jpeg"
        assert picture.headers["cache-control"] == "private, max-age=86400"
    missing = api.client.get(f"/api/alerts/{'b' * 32}/snapshot.jpg")
    assert missing.status_code == 404 and "frame stream" in missing.json()["message"]
    (api.snapshots.dir / str(pictured.snapshot)).unlink()
    deleted = api.client.get(f"/api/alerts/{'a' * 32}/snapshot.jpg")
    assert deleted.status_code == 404 and "retention" in deleted.json()["message"]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/alerts?limit=0", 422, ["'limit'", "greater than or equal to 1"]),
        ("/api/alerts?limit=501", 422, ["'limit'", "less than or equal to 500"]),
        ("/api/alerts?since=yesterday", 400, ["since", "ISO-8601", "yesterday"]),
        ("/api/alerts?until=-5", 400, ["until", ">= 0"]),
        ("/api/alerts?until=nan", 400, ["until", "finite"]),
        ("/api/alerts?since=20&until=10", 400, ["since must not be after until"]),
        ("/api/alerts?cursor=bogus", 400, ["cursor"]),
        ("/api/alerts/not-an-id", 422, ["path parameter 'alert_id'"]),
        (f"/api/alerts/{'0' * 32}", 404, ["not found"]),
        (f"/api/alerts/{'0' * 32}/thumbnail.jpg", 404, ["not found"]),
    ],
)
def test_bad_requests(api: Api, path: str, status: int, words: list[str]) -> None:
    response = api.client.get(path)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "message"}
    for word in words:
        assert word in body["message"], body["message"]
    if status == 422:
        assert {"loc", "msg", "type"} == set(body["detail"][0])
