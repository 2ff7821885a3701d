"""Zone routes: GET / PUT a camera's masks and zones, the 422 answers, the token for
writes, and zones kept across a reopen of the store; the engine applies them at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facemask.contracts.wire import DetectionsEntry
from services.alerts.zones import ZoneSpec
from tests.services.alerts.api.conftest import NOW, TOKEN, Api, build
from tests.services.alerts.conftest import faces_of

POSTER = {"name": "poster", "points": [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]}
DOOR = {"name": "door", "points": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]}
URL = "/api/cameras/lobby/zones"


def test_a_camera_without_zones(api: Api) -> None:
    body = api.client.get("/api/cameras/never-seen/zones").json()
    assert body == {
        "camera_id": "never-seen",
        "ignore": [],
        "include": [],
        "min_overlap": 0.0,
        "source": "none",
    }


def test_put_replaces_the_zones_and_get_shows_them(api: Api) -> None:
    put = api.client.put(URL, json={"ignore": [POSTER], "include": [DOOR], "min_overlap": 0.4})
    assert put.status_code == 200, put.text
    expected = {
        "camera_id": "lobby",
        "ignore": [POSTER],
        "include": [DOOR],
        "min_overlap": 0.4,
        "source": "api",
    }
    assert put.json() == expected
    assert api.client.get(URL).json() == expected
    # Cleared: an empty document (the configured zones, if any, stay off).
    cleared = api.client.put(URL, json={}).json()
    assert (cleared["ignore"], cleared["include"], cleared["source"]) == ([], [], "api")
    # Deleted: the zones set here go, whatever was configured applies again (none here).
    deleted = api.client.delete(URL)
    assert deleted.status_code == 200
    assert deleted.json()["source"] == "none"
    assert api.client.get(URL).json()["source"] == "none"


def entry(frame: int) -> DetectionsEntry:
    return DetectionsEntry(
        camera_id="lobby",
        frame_id=frame,
        frame_sid=f"{int(NOW * 1000)}-{frame}",
        capture_ts=NOW - 1 + frame * 0.2,
        done_ts=NOW,
        width=400,
        height=400,
        model="test",
        detections=faces_of([("no_mask", 0.9, (40, 40, 110, 120))], 400, 400),
    )


def test_zones_apply_from_the_next_entry(api: Api) -> None:
    first = api.engine.process("facemask:{p0}:detections", "1-0", entry(0))
    assert first.ignored == {}
    assert api.client.put(URL, json={"ignore": [POSTER]}).status_code == 200
    second = api.engine.process("facemask:{p0}:detections", "2-0", entry(1))
    assert second.ignored == {"ignore_mask": 1}
    assert api.engine.latest("lobby")["ignored"] == [0]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"ignore": [{"name": "a", "points": [[0, 0], [1, 1]]}]}, "points"),
        ({"ignore": [{"name": "a", "points": [[0, 0]] * 65}]}, "points"),
        ({"ignore": [{"name": "a", "points": [[0, 0], [1.5, 0], [1, 1]]}]}, "points"),
        ({"include": [{**DOOR, "name": f"d{i}"} for i in range(33)]}, "include"),
        ({"ignore": [{**POSTER, "name": "<b>"}]}, "name"),
        ({"ignore": [POSTER, POSTER]}, "unique"),
        ({"ignore": [], "min_overlap": -0.1}, "min_overlap"),
        ({"masks": []}, "masks"),
        ([POSTER], "body"),
    ],
)
def test_invalid_bodies_are_422_and_change_nothing(api: Api, body: Any, where: str) -> None:
    api.client.put(URL, json={"ignore": [POSTER]})
    answer = api.client.put(URL, json=body)
    assert answer.status_code == 422, answer.text
    assert where in answer.json()["message"]
    assert api.client.get(URL).json()["ignore"] == [POSTER]


def test_an_invalid_camera_id_is_422(api: Api) -> None:
    assert api.client.put("/api/cameras/bad%20id/zones", json={}).status_code == 422
    assert api.client.get("/api/cameras/bad%20id/zones").status_code == 422


def test_writes_need_the_token(secured: Api) -> None:
    refused = secured.client.put(URL, json={"ignore": [POSTER]})
    assert refused.status_code == 401
    wrong = secured.client.put(
        URL, json={"ignore": [POSTER]}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert secured.engine.zones.get("lobby").source == "none"
    allowed = secured.client.put(
        URL, json={"ignore": [POSTER]}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert allowed.status_code == 200 and allowed.json()["source"] == "api"


def test_zones_survive_a_reopen_of_the_store(tmp_path: Path) -> None:
    first = build(tmp_path)
    assert first.client.put(URL, json={"ignore": [POSTER], "min_overlap": 0.5}).status_code == 200
    first.client.close()
    first.store.close()
    again = build(tmp_path)
    try:
        body = again.client.get(URL).json()
        assert (body["ignore"], body["min_overlap"], body["source"]) == ([POSTER], 0.5, "api")
        spec = {k: body[k] for k in ("ignore", "include", "min_overlap")}
        assert again.engine.zones.get("lobby").spec == ZoneSpec.model_validate(spec)
    finally:
        again.client.close()
        again.store.close()


def test_delete_brings_the_configured_zones_back(tmp_path: Path) -> None:
    api = build(tmp_path, TOKEN, zones={"lobby": {"ignore": [DOOR]}})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        configured = api.client.get(URL, headers=auth).json()
        assert (configured["ignore"], configured["source"]) == ([DOOR], "config")
        assert api.client.put(URL, json={"ignore": [POSTER]}, headers=auth).status_code == 200
        assert api.client.delete(URL).status_code == 401  # a write: the token is needed
        assert api.engine.zones.get("lobby").source == "api"
        back = api.client.delete(URL, headers=auth)
        assert back.status_code == 200
        assert (back.json()["ignore"], back.json()["source"]) == ([DOOR], "config")
        assert api.engine.zones.get("lobby").source == "config"
    finally:
        api.client.close()
        api.store.close()
