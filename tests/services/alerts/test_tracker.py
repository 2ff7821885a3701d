"""The IoU tracker: association, new tracks, expiry, serialisation."""

from __future__ import annotations

import json

import pytest

from services.alerts.tracker import IouTracker, Observation, TrackerConfig, iou


def obs(box: tuple[int, int, int, int], label: str = "no_mask", score: float = 0.9) -> Observation:
    return Observation(label, score, box)


def test_iou_values() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate boxes never match


def test_faces_keep_their_track_while_moving_and_changing_label() -> None:
    tracker = IouTracker()
    first = tracker.update([obs((0, 0, 50, 50)), obs((200, 0, 250, 50), "mask")], 0.0)
    ids = [t.track_id for t in first]
    assert ids == [1, 2]
    # Both move a little; their order in the frame is swapped; a's label flips.
    second = tracker.update([obs((205, 3, 255, 53), "mask"), obs((4, 2, 54, 52), "mask")], 0.2)
    assert [t.track_id for t in second] == [2, 1]
    assert [o.label for o in tracker.tracks[0].history] == ["no_mask", "mask"]
    assert tracker.tracks[0].hits == 2


def test_greedy_association_prefers_the_best_overlap() -> None:
    tracker = IouTracker(TrackerConfig(min_iou=0.1))
    tracker.update([obs((0, 0, 100, 100))], 0.0)
    # Two candidates overlap the track; the better one continues it, the other is new.
    out = tracker.update([obs((40, 0, 140, 100)), obs((5, 0, 105, 100))], 0.2)
    assert [t.track_id for t in out] == [2, 1]


def test_unmatched_tracks_expire_after_missed_frames_or_gap() -> None:
    tracker = IouTracker(TrackerConfig(max_missed=2, max_gap=10.0))
    tracker.update([obs((0, 0, 50, 50))], 0.0)
    for i in range(2):
        tracker.update([], 0.2 * (i + 1))
    assert len(tracker.tracks) == 1  # missed 2 frames: still there
    tracker.update([], 0.6)
    assert tracker.tracks == []
    # A face back at the same place later is a new person track.
    assert tracker.update([obs((0, 0, 50, 50))], 0.8)[0].track_id == 2

    gap = IouTracker(TrackerConfig(max_missed=100, max_gap=1.0))
    gap.update([obs((0, 0, 50, 50))], 0.0)
    assert gap.update([obs((0, 0, 50, 50))], 0.9)[0].track_id == 1
    assert gap.update([obs((0, 0, 50, 50))], 2.5)[0].track_id == 2  # unseen for 1.6 s


def test_history_is_bounded_and_state_round_trips_through_json() -> None:
    tracker = IouTracker(TrackerConfig(history=3))
    for i in range(5):
        tracker.update([obs((0, 0, 50, 50), "mask" if i % 2 else "no_mask", 0.5 + i / 10)], i)
    track = tracker.tracks[0]
    assert len(track.history) == 3
    track.alerted = True
    restored = IouTracker.from_dict(json.loads(json.dumps(tracker.to_dict())), tracker.config)
    assert restored.to_dict() == tracker.to_dict()
    assert restored.next_id == tracker.next_id
    # Both continue identically.
    a = tracker.update([obs((1, 1, 51, 51)), obs((300, 0, 350, 50))], 6.0)
    b = restored.update([obs((1, 1, 51, 51)), obs((300, 0, 350, 50))], 6.0)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
