"""Review routes over a real store: POST /api/alerts/{id}/review (who, server time, note,
label), its 4xx answers, the token, the ?state filter, the ``review`` SSE event, and the
clean frame (frame.jpg)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from facemask.contracts.wire import FrameEntry
from services.alerts.api.events import event_stream, review_event, sse_event
from services.alerts.api.models import AlertOut
from services.alerts.hub import ReviewChange
from tests.services.alerts.api.conftest import NOW, TOKEN, Api
from tests.services.alerts.test_snapshots import grey_jpeg
from tests.services.alerts.test_store import record

A = "a" * 32


def post(api: Api, body: dict[str, Any], alert_id: str = A, **kw: Any) -> Any:
    return api.client.post(f"/api/alerts/{alert_id}/review", json=body, **kw)


@pytest.mark.parametrize(
    ("body", "review"),
    [
        (
            {"state": "acknowledged"},
            {"state": "acknowledged", "by": "api", "note": "", "label": None},
        ),
        (
            {"state": "confirmed", "by": "Ana Lima", "note": "no mask at the desk"},
            {
                "state": "confirmed",
                "by": "Ana Lima",
                "note": "no mask at the desk",
                "label": "no_mask",
            },
        ),
        (
            {"state": "false_positive", "by": "ana"},
            {"state": "false_positive", "by": "ana", "note": "", "label": "mask"},
        ),
        (
            {"state": "false_positive", "label": "none", "note": "Mona Lisa poster"},
            {"state": "false_positive", "by": "api", "note": "Mona Lisa poster", "label": "none"},
        ),
        ({"state": "new", "by": "bo"}, {"state": "new", "by": "bo", "note": "", "label": None}),
    ],
)
def test_a_review_is_stored_and_answered_with_the_alert(
    api: Api, body: dict[str, Any], review: dict[str, Any]
) -> None:
    api.add_alert(A)
    api.now = NOW + 321.5
    answer = post(api, body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["review"] == {**review, "at": NOW + 321.5}  # the server's clock
    assert doc["deliveries"][0]["sink"] == "webhook"  # the alert detail
    assert api.client.get(f"/api/alerts/{A}").json() == doc
    (listed,) = api.client.get("/api/alerts").json()["alerts"]
    assert listed["review"] == doc["review"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ["state", "Field required"]),
        ({"state": "done"}, ["state"]),
        ({"state": "acknowledged", "label": "mask"}, ["takes no label"]),
        ({"state": "confirmed", "label": "mask"}, ["one of no_mask"]),
        ({"state": "false_positive", "label": "no_mask"}, ["one of mask, none"]),
        ({"state": "confirmed", "by": "x" * 65}, ["by", "64"]),
        ({"state": "confirmed", "by": ""}, ["by"]),
        ({"state": "confirmed", "by": "ana\nadmin"}, ["by", "pattern"]),
        ({"state": "confirmed", "note": "n" * 501}, ["note", "500"]),
        ({"state": "confirmed", "reviewer": "ana"}, ["reviewer"]),
    ],
)
def test_bad_reviews_get_422_and_change_nothing(
    api: Api, body: dict[str, Any], words: list[str]
) -> None:
    api.add_alert(A)
    answer = post(api, body)
    assert answer.status_code == 422, answer.text
    for word in words:
        assert word in answer.json()["message"], (word, answer.json()["message"])
    assert api.client.get(f"/api/alerts/{A}").json()["review"]["state"] == "new"


def test_unknown_and_malformed_alert_ids(api: Api) -> None:
    missing = post(api, {"state": "confirmed"}, "b" * 32)
    assert missing.status_code == 404 and "not found" in missing.json()["message"]
    assert post(api, {"state": "confirmed"}, "nope").status_code == 422


def test_with_a_token_a_review_needs_it(secured: Api) -> None:
    secured.add_alert(A)
    assert post(secured, {"state": "confirmed"}).status_code == 401
    wrong = post(secured, {"state": "confirmed"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
    assert secured.store.get_alert(A).review.state == "new"  # type: ignore[union-attr]
    ok = post(secured, {"state": "confirmed"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["review"]["state"] == "confirmed"


def test_the_history_filters_by_review_state(api: Api) -> None:
    states = ["new", "acknowledged", "confirmed", "false_positive"] * 2
    for i, state in enumerate(states):
        api.add_alert(f"{i:032x}", f"cam{i % 2}", NOW + i)
        if state != "new":
            assert post(api, {"state": state}, f"{i:032x}").status_code == 200

    def ids(**params: Any) -> list[int]:
        page = api.client.get("/api/alerts", params=params)
        assert page.status_code == 200, page.text
        return [int(a["id"], 16) for a in page.json()["alerts"]]

    assert ids(state="new") == [4, 0]
    assert ids(state="reviewed") == [7, 6, 3, 2]
    assert ids(state="reviewed", camera_id="cam1") == [7, 3]
    assert ids(state="confirmed", since=NOW + 3) == [6]
    # pages of a filtered history
    first = api.client.get("/api/alerts", params={"state": "reviewed", "limit": 3}).json()
    rest = api.client.get(
        "/api/alerts", params={"state": "reviewed", "limit": 3, "cursor": first["next_cursor"]}
    ).json()
    assert [a["id"] for a in first["alerts"] + rest["alerts"]] == [
        f"{i:032x}" for i in (7, 6, 3, 2)
    ]
    assert rest["next_cursor"] is None
    bad = api.client.get("/api/alerts", params={"state": "done"})
    assert bad.status_code == 422 and "state" in bad.json()["message"]


def test_a_review_is_a_server_sent_event(api: Api) -> None:
    alerts = api.store.commit_batch([record(f"{i:032x}", ts=NOW + i) for i in range(2)], [], {}, {})
    reviewed = api.store.review(alerts[0].alert_id, "confirmed", by="ana", at=NOW + 9)
    assert reviewed is not None
    event = review_event(ReviewChange(reviewed))
    data = json.dumps(AlertOut.of(reviewed).model_dump(mode="json"), separators=(",", ":"))
    assert event == f"event: review\ndata: {data}\n\n"  # no id: resume stays with alerts
    assert json.loads(data)["review"]["by"] == "ana"

    async def scenario() -> list[str]:
        stream = event_stream(api.hub, api.store, 1, heartbeat=5.0)
        head = [await anext(stream) for _ in range(3)]  # retry, alert 2 replayed, connected
        api.hub.publish(ReviewChange(reviewed))  # of alert 1, older than the resume point
        api.hub.publish(replace(record("f" * 32), seq=3))
        api.hub.publish(None)
        return head + [chunk async for chunk in stream]

    chunks = asyncio.run(scenario())
    assert chunks == [
        "retry: 2000\n\n",
        sse_event(alerts[1]),
        ": connected\n\n",
        event,
        sse_event(replace(record("f" * 32), seq=3)),
    ]


def test_the_route_publishes_the_review(api: Api) -> None:
    api.add_alert(A)
    published: list[Any] = []
    api.hub.publish = published.append  # type: ignore[method-assign]
    post(api, {"state": "acknowledged", "by": "ana"})
    (change,) = published
    assert isinstance(change, ReviewChange) and change.alert.review.by == "ana"


def test_the_clean_frame_is_served_as_kept(api: Api) -> None:
    data = grey_jpeg()
    entry = FrameEntry("lobby", 1, NOW, "jpeg", 320, 240, data)

    saved = api.snapshots.save(A, NOW, np.zeros((240, 427, 3), np.uint8), frame=entry)
    api.add_alert(A, snapshot=saved.image, thumbnail=saved.thumbnail, frame=saved.frame)
    api.add_alert("b" * 32)  # no frame kept
    got = api.client.get(f"/api/alerts/{A}/frame.jpg")
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.content == data  # the frame stream's bytes, not re-encoded
    body = api.client.get(f"/api/alerts/{A}").json()
    assert body["frame_url"] == f"/api/alerts/{A}/frame.jpg"
    none = api.client.get(f"/api/alerts/{'b' * 32}/frame.jpg")
    assert none.status_code == 404 and "no clean frame" in none.json()["message"]
    assert api.client.get(f"/api/alerts/{'b' * 32}").json()["frame_url"] is None
    kept = api.snapshots.path(saved.frame)
    assert kept is not None
    kept.unlink()  # retention
    gone = api.client.get(f"/api/alerts/{A}/frame.jpg")
    assert gone.status_code == 404 and "deleted (retention)" in gone.json()["message"]
