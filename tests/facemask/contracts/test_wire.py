"""Stream wire format v1: round trips of every entry kind and table-driven rejections."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from facemask.contracts.wire import (
    AlertEvent,
    DetectionsEntry,
    FrameEntry,
    WireError,
    as_text,
    deadletter_record,
    parse_detections,
    validate_camera_id,
)
from facemask.core.types import Detections

FRAME = FrameEntry("lobby", 7, 1_700_000_000.25, "jpeg", 640, 480, b"\xff\xd8jpeg", node="pi-1")
FACES = Detections.from_pixels(
    [(10, 20, 110, 140), (300, 0, 640, 480)], [0.9, 0.51], [1, 0], 640, 480
)
ENTRY = DetectionsEntry(
    camera_id="lobby",
    frame_id=7,
    frame_sid="1700000000250-0",
    capture_ts=1_700_000_000.25,
    done_ts=1_700_000_000.31,
    width=640,
    height=480,
    model="abc123-bf16",
    detections=FACES,
    runs=5,
)


def as_redis(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What redis-py returns for an entry written with these fields."""
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def test_frame_round_trip() -> None:
    assert FrameEntry.from_fields(as_redis(FRAME.to_fields())) == FRAME


def test_detections_round_trip_keeps_pixel_boxes_exactly() -> None:
    fields = ENTRY.to_fields()
    assert json.loads(fields["dets"]) == [
        {"label": "no_mask", "score": 0.9, "box": [10, 20, 110, 140]},
        {"label": "mask", "score": 0.51, "box": [300, 0, 640, 480]},
    ]
    back = DetectionsEntry.from_fields(as_redis(fields))
    assert back.to_fields() == fields
    np.testing.assert_array_equal(back.detections.pixels(640, 480), FACES.pixels(640, 480))
    assert back.detections.labels == ["no_mask", "mask"]


def test_skipped_entry_round_trip() -> None:
    skipped = DetectionsEntry(
        "door", 1, "1-0", 1.7e9 + 5, 1.7e9 + 6, 32, 32, "m", status="skipped", reason="too_old"
    )
    back = DetectionsEntry.from_fields(as_redis(skipped.to_fields()))
    assert (back.status, back.reason, len(back.detections)) == ("skipped", "too_old", 0)


def test_alert_event_round_trip() -> None:
    event = AlertEvent("a1", "lobby", 12.5, 9, score=0.8125, track_id=4, message="hi")
    assert AlertEvent.from_fields(as_redis(event.to_fields())) == event


def _frame_with(**changes: Any) -> dict[bytes, bytes]:
    fields = as_redis(FRAME.to_fields())
    for key, value in changes.items():
        if value is None:
            fields.pop(key.encode(), None)
        else:
            fields[key.encode()] = value if isinstance(value, bytes) else str(value).encode()
    return fields


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"v": "2"}, "bad_version"),
        ({"camera": None}, "missing_field"),
        ({"camera": "a b"}, "bad_camera"),
        ({"camera": "x" * 129}, "bad_camera"),
        ({"frame": "-1"}, "bad_field"),
        ({"frame": "seven"}, "bad_field"),
        ({"ts": "nan"}, "bad_field"),
        ({"enc": "gif"}, "bad_encoding"),
        ({"w": "0"}, "bad_field"),
        ({"w": "16385"}, "too_large"),
        ({"w": "16000", "h": "16000"}, "too_large"),
        ({"data": b""}, "empty_image"),
        ({"camera": b"\xff\xfe"}, "bad_field"),
    ],
)
def test_frame_rejections(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(WireError) as caught:
        FrameEntry.from_fields(_frame_with(**changes))
    assert caught.value.reason == reason


def test_frame_byte_limit() -> None:
    with pytest.raises(WireError, match="exceed 4") as caught:
        FrameEntry.from_fields(as_redis(FRAME.to_fields()), max_bytes=4)
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize(
    ("dets", "reason"),
    [
        ({"label": "mask"}, "bad_detections"),  # not a list
        (["nope"], "bad_detections"),
        ([{"label": "hat", "score": 0.5, "box": [0, 0, 1, 1]}], "bad_detections"),
        ([{"label": "mask", "score": 1.5, "box": [0, 0, 1, 1]}], "bad_detections"),
        ([{"label": "mask", "score": True, "box": [0, 0, 1, 1]}], "bad_detections"),
        ([{"label": "mask", "score": 0.5, "box": [0, 0, 1]}], "bad_detections"),
        ([{"label": "mask", "score": 0.5, "box": [0.5, 0, 1, 1]}], "bad_detections"),
        ([{"label": "mask", "score": 0.5, "box": [5, 0, 1, 1]}], "bad_detections"),  # x1 > x2
        ([{"label": "mask", "score": 0.5, "box": [0, 0, 641, 1]}], "bad_detections"),
    ],
)
def test_detections_rejections(dets: Any, reason: str) -> None:
    fields = as_redis(ENTRY.to_fields())
    fields[b"dets"] = json.dumps(dets).encode()
    with pytest.raises(WireError) as caught:
        DetectionsEntry.from_fields(fields)
    assert caught.value.reason == reason
    with pytest.raises(WireError):
        parse_detections(dets, 640, 480)


def test_detections_not_json() -> None:
    fields = as_redis(ENTRY.to_fields())
    fields[b"dets"] = b"{"
    with pytest.raises(WireError) as caught:
        DetectionsEntry.from_fields(fields)
    assert caught.value.reason == "bad_detections"


@pytest.mark.parametrize("camera_id", ["lobby", "door-2", "cam_01.a", "x" * 64, "9", "A.b-C_d"])
def test_valid_camera_ids(camera_id: str) -> None:
    assert validate_camera_id(camera_id) == camera_id


def test_deadletter_record_keeps_the_evidence_bounded() -> None:
    fields = {b"camera": b"lobby", b"data": b"x" * 100, b"w": b"640", b"k" * 65: b"dropped"}
    record = deadletter_record("s", "1-0", fields, "bad_field", "e" * 900, max_value_bytes=10)
    assert record["reason"] == "bad_field" and len(record["error"]) == 500
    assert (record["stream"], record["sid"], record["camera"]) == ("s", "1-0", "lobby")
    assert record["orig_data"] == b"<truncated>" and record["orig_w"] == b"640"
    assert not any(len(k) > 70 for k in record)
    assert as_text(b"\xffa") == "\ufffda" and as_text(3) == "3"
