"""The IoU tracker: vectorised IoU, greedy association, new tracks, expiry, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemask.core.boxes import greedy_match, iou_matrix
from facemask.core.types import Detections
from services.alerts.tracker import IouTracker, TrackerConfig, iou
from tests.services.alerts.conftest import faces_of

W, H = 640, 480
Box = tuple[int, int, int, int]


def obs(box: Box, label: str = "no_mask", score: float = 0.9) -> tuple[str, float, Box]:
    return (label, score, box)


def frame(*rows: tuple[str, float, Box]) -> Detections:
    return faces_of(rows, W, H)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (10, 10, 20, 20), 0.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # degenerate boxes never match
    ],
)
def test_iou_values(a: Box, b: Box, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


def test_iou_matrix_equals_pairwise_iou() -> None:
    rng = np.random.default_rng(4)
    xy = rng.integers(0, 300, size=(12, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 80, size=(12, 2))], axis=1)
    matrix = iou_matrix(boxes[:5], boxes[5:])
    assert matrix.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            assert matrix[i, j] == pytest.approx(iou(tuple(boxes[i]), tuple(boxes[5 + j])))
    assert iou_matrix(np.empty((0, 4)), boxes).shape == (0, 12)


@pytest.mark.parametrize(
    ("overlaps", "min_iou", "expected"),
    [
        ([[0.9, 0.5], [0.8, 0.1]], 0.3, {0: 0}),  # row 0 takes its best; row 1's is gone
        ([[0.5, 0.9], [0.8, 0.1]], 0.3, {1: 0, 0: 1}),
        ([[0.2]], 0.3, {}),
        ([[0.5, 0.5], [0.5, 0.5]], 0.3, {0: 0, 1: 1}),  # ties: lower row, then lower column
    ],
)
def test_greedy_match(
    overlaps: list[list[float]], min_iou: float, expected: dict[int, int]
) -> None:
    assert greedy_match(np.array(overlaps), min_iou) == expected


def test_faces_keep_their_track_while_moving_and_changing_label() -> None:
    tracker = IouTracker()
    first = tracker.update(frame(obs((0, 0, 50, 50)), obs((200, 0, 250, 50), "mask")), W, H, 0.0)
    ids = [t.track_id for t in first]
    assert ids == [1, 2]
    # Both move a little; their order in the frame is swapped; a's label flips.
    second = tracker.update(
        frame(obs((205, 3, 255, 53), "mask"), obs((4, 2, 54, 52), "mask")), W, H, 0.2
    )
    assert [t.track_id for t in second] == [2, 1]
    assert tracker.tracks[0].history.labels == ["no_mask", "mask"]
    assert tracker.tracks[0].hits == 2
    assert tracker.tracks[0].box == (4, 2, 54, 52)


def test_greedy_association_prefers_the_best_overlap() -> None:
    tracker = IouTracker(TrackerConfig(min_iou=0.1))
    tracker.update(frame(obs((0, 0, 100, 100))), W, H, 0.0)
    # Two candidates overlap the track; the better one continues it, the other is new.
    out = tracker.update(frame(obs((40, 0, 140, 100)), obs((5, 0, 105, 100))), W, H, 0.2)
    assert [t.track_id for t in out] == [2, 1]


@pytest.mark.parametrize(
    ("gone_frames", "back_box", "same"),
    [
        (1, (0, 0, 50, 50), True),  # a one-frame dropout
        (11, (5, 3, 55, 53), True),  # back 3 s later about where it was (an occlusion)
        (19, (0, 0, 50, 50), True),  # back exactly the re-entry time (5 s) after last seen
        (20, (0, 0, 50, 50), False),  # 5.25 s: a new person track
        (3, (40, 40, 90, 90), False),  # elsewhere (IoU 0.1): someone else
    ],
)
def test_a_lost_track_resumes_within_the_reentry_time(
    gone_frames: int, back_box: Box, same: bool
) -> None:
    tracker = IouTracker(TrackerConfig(reentry=5.0))
    assert tracker.update(frame(obs((0, 0, 50, 50))), W, H, 0.0)[0].track_id == 1
    for i in range(1, gone_frames + 1):  # 4 fps: frames 1..gone_frames without the face
        tracker.update(Detections.empty(), W, H, 0.25 * i)
    assert [t.missed for t in tracker.tracks] == [gone_frames]  # lost, not ended
    back = tracker.update(frame(obs(back_box)), W, H, 0.25 * (gone_frames + 1))
    assert (back[0].track_id == 1) is same
    if same:
        assert back[0].missed == 0 and back[0].hits == 2


def test_tracks_seen_in_the_previous_frame_are_matched_before_lost_ones() -> None:
    tracker = IouTracker(TrackerConfig(min_iou=0.1))
    tracker.update(frame(obs((0, 0, 100, 100)), obs((60, 0, 160, 100))), W, H, 0.0)
    tracker.update(frame(obs((60, 0, 160, 100))), W, H, 0.2)  # track 1 is lost
    # The face overlaps lost track 1 best (IoU 0.67 vs 0.54), but track 2 was there a
    # frame ago: it keeps its person.
    out = tracker.update(frame(obs((40, 0, 140, 100))), W, H, 0.4)
    assert [t.track_id for t in out] == [2]
    assert [(t.track_id, t.missed) for t in tracker.tracks] == [(1, 2), (2, 0)]


def test_history_is_bounded_and_state_round_trips_through_json() -> None:
    tracker = IouTracker(TrackerConfig(history=3))
    for i in range(5):
        face = obs((0, 0, 50, 50), "mask" if i % 2 else "no_mask", 0.5 + i / 10)
        tracker.update(frame(face), W, H, i)
    track = tracker.tracks[0]
    assert len(track.history) == 3
    track.alerted = True
    restored = IouTracker.from_dict(json.loads(json.dumps(tracker.to_dict())), tracker.config)
    assert restored.to_dict() == tracker.to_dict()
    assert restored.next_id == tracker.next_id
    # Both continue identically.
    nxt = frame(obs((1, 1, 51, 51)), obs((300, 0, 350, 50)))
    a = tracker.update(nxt, W, H, 6.0)
    b = restored.update(nxt, W, H, 6.0)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]


def test_state_stored_before_frame_sizes_existed_still_loads() -> None:
    old = {
        "next_id": 3,
        "tracks": [
            {
                "id": 2,
                "box": [10, 20, 49, 69],
                "first_ts": 1.0,
                "last_ts": 2.0,
                "missed": 0,
                "hits": 2,
                "alerted": False,
                "history": [["no_mask", 0.9, 10, 20, 49, 69], ["mask", 0.8, 11, 20, 49, 70]],
            }
        ],
    }
    tracker = IouTracker.from_dict(old, TrackerConfig(history=8))
    state = tracker.to_dict()["tracks"][0]
    assert state["history"] == old["tracks"][0]["history"]  # pixels survive exactly
    assert tracker.update(frame(obs((10, 20, 49, 69))), W, H, 2.2)[0].track_id == 2
