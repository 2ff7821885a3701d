"""Stream wire format v1: round trips of every entry kind and table-driven rejections."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from facemask.contracts.wire import (
    CAMERA_ID_PATTERN,
    DEFAULT_MAX_CLOCK_SKEW,
    AlertEvent,
    DetectionsEntry,
    FrameEntry,
    WireError,
    as_text,
    check_timestamp,
    deadletter_record,
    is_valid_camera_id,
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


def test_detections_model_field_is_optional_for_older_writers() -> None:
    fields = as_redis(ENTRY.to_fields())
    assert DetectionsEntry.from_fields(fields).model == "abc123-bf16"
    del fields[b"model"]
    back = DetectionsEntry.from_fields(fields)
    assert back.model == ""
    assert back.detections.labels == ["no_mask", "mask"]


@pytest.mark.parametrize(("value", "ok"), [(b"0123456789abcdef", True), (b"x" * 129, False)])
def test_detections_model_field_is_bounded_text(value: bytes, ok: bool) -> None:
    fields = {**as_redis(ENTRY.to_fields()), b"model": value}
    if ok:
        assert DetectionsEntry.from_fields(fields).model == value.decode()
        return
    with pytest.raises(WireError) as caught:
        DetectionsEntry.from_fields(fields)
    assert caught.value.reason == "bad_field"
    with pytest.raises(WireError):
        DetectionsEntry.from_fields({**fields, b"model": b"\xff"})


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
        ({"ts": "nan"}, "bad_timestamp"),
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


# -- camera ids: one rule, every parser ----------------------------------------------------

HOSTILE_CAMERA_IDS = [
    "",
    "a b",
    "cam\nx",  # a new line in a Prometheus label value / log line
    "cam\r",
    "cam\x00",
    "\u202egnp.exe",  # right-to-left override (bidi)
    "cam\u200b",  # zero-width space
    "caf\u00e9",
    "a/b",  # never reachable as a URL path segment
    "../etc",
    "_other",  # the metrics' overflow label value
    ".hidden",
    "-flag",
    "x" * 65,
    "x" * 10_000,
    "{p1}",  # a Redis Cluster hash tag
    "a:b",
]


@pytest.mark.parametrize("camera_id", HOSTILE_CAMERA_IDS)
def test_hostile_camera_ids_are_refused_by_every_parser(camera_id: str) -> None:
    with pytest.raises(WireError) as caught:
        validate_camera_id(camera_id)
    assert caught.value.reason == "bad_camera"
    assert len(str(caught.value)) < 300  # the message never echoes a huge id
    assert not is_valid_camera_id(camera_id)
    frame = as_redis(FRAME.to_fields())
    frame[b"camera"] = camera_id.encode()
    detections = as_redis(ENTRY.to_fields())
    detections[b"camera"] = camera_id.encode()
    for parse, fields in (
        (FrameEntry.from_fields, frame),
        (DetectionsEntry.from_fields, detections),
    ):
        with pytest.raises(WireError) as caught:
            parse(fields)
        assert caught.value.reason in ("bad_camera", "missing_field")
    with pytest.raises(WireError):
        FrameEntry(camera_id, 1, FRAME.capture_ts, "jpeg", 8, 8, b"x").to_fields()


def test_the_camera_id_rule_is_the_documented_pattern() -> None:
    import re

    for camera_id in [*HOSTILE_CAMERA_IDS, "lobby", "A.b-C_d", "9", "x" * 64]:
        documented = re.fullmatch(CAMERA_ID_PATTERN, camera_id) is not None
        assert is_valid_camera_id(camera_id) is documented, camera_id
    assert is_valid_camera_id("lobby\n") is False  # `$` would match before a final new line
    assert is_valid_camera_id(None) is False


# -- capture times: within the receiver's skew window ---------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        (repr(NOW), True),
        (repr(NOW - 3600), True),  # old frames are the consumers' business (max_frame_age)
        (repr(NOW + 299.0), True),  # within the skew window
        (repr(NOW + 301.0), False),  # too far in the future
        (repr(NOW + 10 * 365 * 86400), False),
        ("1e300", False),
        ("inf", False),
        ("-inf", False),
        ("nan", False),
        ("-1", False),
        ("0", False),
        ("946684799.0", False),  # before 2000-01-01: a camera with an unset clock
        ("946684800.0", True),
        ("soon", False),
        ("", False),
    ],
)
def test_capture_time_window(ts: str, ok: bool) -> None:
    frame = _frame_with(ts=ts)
    detections = as_redis(ENTRY.to_fields())
    detections[b"ts"] = ts.encode()
    detections[b"t_done"] = ts.encode()
    for parse, fields in (
        (FrameEntry.from_fields, frame),
        (DetectionsEntry.from_fields, detections),
    ):
        if ok:
            assert parse(fields, now=NOW).capture_ts == float(ts)
            continue
        with pytest.raises(WireError) as caught:
            parse(fields, now=NOW)
        assert caught.value.reason == "bad_timestamp", caught.value


def test_the_skew_window_and_max_age_are_parameters() -> None:
    fields = _frame_with(ts=repr(NOW + 600))
    with pytest.raises(WireError, match="600 s in the future"):
        FrameEntry.from_fields(fields, now=NOW)
    assert FrameEntry.from_fields(fields, now=NOW, max_skew=900).capture_ts == NOW + 600
    old = _frame_with(ts=repr(NOW - 100))
    assert FrameEntry.from_fields(old, now=NOW, max_age=200).capture_ts == NOW - 100
    with pytest.raises(WireError, match="100 s in the past") as caught:
        FrameEntry.from_fields(old, now=NOW, max_age=50)
    assert caught.value.reason == "bad_timestamp"
    # a detections entry finished in the future is refused as well
    entry = as_redis(ENTRY.to_fields())
    entry[b"t_done"] = repr(NOW + 3600).encode()
    with pytest.raises(WireError, match="t_done"):
        DetectionsEntry.from_fields(entry, now=NOW)


def test_the_default_clock_is_the_wall_clock() -> None:
    import time

    assert FrameEntry.from_fields(_frame_with(ts=repr(time.time()))).frame_id == FRAME.frame_id
    with pytest.raises(WireError) as caught:
        FrameEntry.from_fields(_frame_with(ts=repr(time.time() + 3 * DEFAULT_MAX_CLOCK_SKEW)))
    assert caught.value.reason == "bad_timestamp"
    assert check_timestamp("ts", NOW, now=NOW) == NOW
