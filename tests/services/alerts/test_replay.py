"""The sample clip's real detections through the engine with the default settings: one
alert per unmasked person at the start, one when the left man takes his mask off again,
and none for the poster once an ignore mask covers it (the issue's acceptance, without
Redis; ``tests/e2e/test_alerts_video.py`` plays the same through the real services)."""

from __future__ import annotations

import pytest

from services.alerts.config import AlertSettings
from services.alerts.engine import AlertEngine, NewAlert
from services.alerts.zones import ZoneBook, ZoneSpec
from tests.services.alerts.conftest import (
    MASK_OFF,
    POSTER_MASK,
    Clip,
    describe_alerts,
    expected_alerts,
    who,
)

pytestmark = pytest.mark.model

START = 1_700_000_000.0
STREAM = "facemask:{p0}:detections"
MASKED_POSTER = {
    "clip": ZoneSpec.model_validate({"ignore": [{"name": "poster", "points": POSTER_MASK}]})
}


def replay(clip: Clip, zones: dict[str, ZoneSpec], **settings: float) -> tuple[list[NewAlert], int]:
    """The clip's entries through an engine with the default settings (plus ``settings``);
    the alerts, and the faces the zones dropped."""
    engine = AlertEngine.from_settings(
        AlertSettings(state_dir="unused", **settings), ZoneBook(zones)
    )
    alerts: list[NewAlert] = []
    ignored = 0
    for i, entry in enumerate(clip.entries("clip", START)):
        outcome = engine.process(STREAM, f"{i + 1}-0", entry)
        assert not outcome.duplicate and outcome.suppressed == 0
        alerts.extend(outcome.alerts)
        ignored += sum(outcome.ignored.values())
    return alerts, ignored


def test_the_clip_is_what_ingest_publishes(group4_clip: Clip) -> None:
    # 16.6 s of 25 fps video at ingest's default 5 fps: every 5th frame.
    assert [f.index for f in group4_clip.frames] == list(range(0, 415, 5))
    assert {(f.width, f.height) for f in group4_clip.frames} == {(960, 506)}
    # The poster is found in every frame; the four people too.
    for frame in group4_clip.frames:
        boxes = frame.detections.pixels(frame.width, frame.height).tolist()
        assert sorted(who(b) for b in boxes) == [
            "far right",
            "front",
            "left man",
            "poster",
            "right",
        ]


@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "poster masked"])
def test_one_alert_per_person_and_the_mask_off_moment(group4_clip: Clip, masked: bool) -> None:
    alerts, ignored = replay(group4_clip, MASKED_POSTER if masked else {})
    found = describe_alerts([(a.ts - START, a.box) for a in alerts])
    assert found == expected_alerts(poster=not masked), found
    assert ignored == (len(group4_clip.frames) if masked else 0)
    # Everyone at the start alerts at the same frame: none is held back by another.
    first = [a for a in alerts if a.ts - START < MASK_OFF[0]]
    assert len({a.frame_id for a in first}) == 1 and len({a.track_id for a in first}) == len(first)
    # The man's second alert is his own track's, re-armed by masking up (not a new track).
    (again,) = [a for a in alerts if a.ts - START >= MASK_OFF[0]]
    assert again.track_id == next(a.track_id for a in first if who(a.box) == "left man")
    assert all(a.violators == 1 and a.track_ids == (a.track_id,) for a in alerts)


def test_a_grouping_window_names_everyone_in_one_alert(group4_clip: Clip) -> None:
    alerts, _ = replay(group4_clip, MASKED_POSTER, group_window=2.0)
    grouped, mask_off = alerts
    assert grouped.violators == 4 and len(set(grouped.track_ids)) == 4
    assert who(grouped.box) == "left man"  # the first of them, in the frame they started
    assert describe_alerts([(mask_off.ts - START, mask_off.box)]) == ["left man (mask off)"]
    assert mask_off.track_ids == (grouped.track_id,)
