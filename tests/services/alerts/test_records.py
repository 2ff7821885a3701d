"""The alert record: its JSON (API, webhook, Slack, MQTT) and its alerts-stream event."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facemask.contracts.wire import AlertEvent
from services.alerts.records import AlertRecord
from tests.services.alerts.test_store import record


def lobby_alert() -> AlertRecord:
    return replace(
        record("a" * 32, ts=1714564800.25),
        seq=7,
        score=0.912345678,
        track_id=3,
        camera_name="Lobby",
        place="Main hall",
        message="Person without a mask at Lobby (Main hall)",
        snapshot="2024/05/01/a.jpg",
        rule={"k": 5, "n": 8, "min_score": 0.6, "min_face": 24, "cooldown": 30.0},
    )


def test_the_event_on_the_alerts_stream_is_byte_for_byte_the_wire_format() -> None:
    # The fields the first release XADD-ed for this alert (from its JSON document).
    assert lobby_alert().to_event().to_fields() == {
        "v": "1",
        "alert": "a" * 32,
        "camera": "lobby",
        "ts": "1714564800.25",
        "frame": "1714564800250",
        "kind": "no_mask",
        "score": "0.9123",  # 4 decimals, as the API shows it
        "track": "3",
        "message": "Person without a mask at Lobby (Main hall)",
    }
    event = AlertEvent.from_fields(lobby_alert().to_event().to_fields())
    assert event == lobby_alert().to_event()


@pytest.mark.parametrize(
    ("score", "shown"),
    [(0.9, 0.9), (0.912345678, 0.9123), (0.99995, 1.0), (1.0, 1.0), (0.00004, 0.0)],
)
def test_the_score_has_four_decimals_in_json_and_event(score: float, shown: float) -> None:
    alert = replace(lobby_alert(), score=score)
    assert alert.to_json()["score"] == shown == alert.to_event().score


def test_json_document() -> None:
    doc = lobby_alert().to_json()
    assert list(doc) == [
        "id",
        "seq",
        "camera_id",
        "camera_name",
        "place",
        "ts",
        "time",
        "kind",
        "message",
        "frame_id",
        "frame_sid",
        "track_id",
        "score",
        "box",
        "width",
        "height",
        "detections",
        "has_snapshot",
        "rule",
        "violators",
        "track_ids",
    ]
    assert doc["time"] == "2024-05-01T12:00:00.250Z"
    assert doc["box"] == [1, 2, 30, 40] and doc["has_snapshot"] is True
    assert "snapshot" not in doc and "stream" not in doc  # no file paths, no internals
    unnamed = replace(lobby_alert(), camera_name="", snapshot=None)
    assert unnamed.to_json()["camera_name"] == "lobby"
    assert unnamed.to_json()["has_snapshot"] is False and not unnamed.has_snapshot
