"""Camera routes: the camera list and the latest picture (ETag, 304, 404)."""

from __future__ import annotations

from facemask.contracts.wire import DetectionsEntry
from services.alerts.api.models import CameraOut
from tests.services.alerts.api.conftest import NOW, Api
from tests.services.alerts.conftest import faces_of


def detections(camera: str, frame: int, label: str = "mask") -> DetectionsEntry:
    return DetectionsEntry(
        camera_id=camera,
        frame_id=frame,
        frame_sid=f"{int(NOW * 1000)}-{frame}",
        capture_ts=NOW - 1 + frame * 0.2,
        done_ts=NOW,
        width=464,
        height=330,
        model="test",
        detections=faces_of([(label, 0.9, (40, 40, 110, 120))], 464, 330),
    )


def test_camera_list(api: Api) -> None:
    api.registry.cameras = [
        {
            "id": "lobby",
            "name": "Lobby",
            "location": "Main hall",
            "online": "1",
            "status": "up",
            "fps": "5.0",
            "last_seen": str(NOW - 1),
            "node": "n1",
            "resolution": "464x330",
        },
        {"id": "garage", "name": "Garage", "online": "0"},
    ]
    for frame in range(3):
        api.engine.process("facemask:{p0}:detections", f"{frame + 1}-0", detections("lobby", frame))
    api.add_alert("a" * 32, "lobby", NOW - 100)
    body = api.client.get("/api/cameras").json()
    assert body["now"] == NOW
    cameras = {c["id"]: c for c in body["cameras"]}
    assert list(cameras) == ["garage", "lobby"]
    lobby = cameras["lobby"]
    assert set(lobby) == set(CameraOut.model_fields)
    assert (lobby["name"], lobby["location"], lobby["status"], lobby["online"]) == (
        "Lobby",
        "Main hall",
        "up",
        True,
    )
    assert (lobby["compliance"], lobby["masked"], lobby["faces"]) == (1.0, 3, 3)
    assert lobby["alerts_24h"] == 1 and lobby["window_s"] == 30.0
    assert lobby["configured_fps"] == 5.0 and lobby["fps"] == 5.0
    assert lobby["rule"] == {
        "k": 2,
        "n": 3,
        "min_score": 0.6,
        "min_face": 24,
        "cooldown": 0.0,
        "group_window": 0.0,
    }
    garage = cameras["garage"]
    assert (garage["status"], garage["online"], garage["compliance"]) == ("offline", False, None)


def test_latest_picture(api: Api) -> None:
    api.registry.cameras = [{"id": "lobby", "online": "1"}]
    unknown = api.client.get("/api/cameras/nope/latest.jpg")
    assert unknown.status_code == 404 and "unknown camera" in unknown.json()["message"]
    none_yet = api.client.get("/api/cameras/lobby/latest.jpg")
    assert none_yet.status_code == 404 and "no frame" in none_yet.json()["message"]

    api.engine.process("facemask:{p2}:detections", "5-0", detections("lobby", 0))
    first = api.client.get("/api/cameras/lobby/latest.jpg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content.startswith(b"\xff\xd8")
    etag = first.headers["etag"]
    assert etag == f'"{int(NOW * 1000)}-0"' and first.headers["cache-control"] == "no-cache"
    # The picture comes from the frame stream of the detections entry's partition.
    assert api.pictures.calls[-1] == ("lobby", "facemask:{p2}:frames")
    again = api.client.get("/api/cameras/lobby/latest.jpg", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # A camera seen in the detections but not (or no longer) registered has a picture too.
    api.registry.cameras = []
    assert api.client.get("/api/cameras/lobby/latest.jpg").status_code == 200
