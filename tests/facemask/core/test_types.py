"""The Detections type: shape contract, labels, pixel boxes as the reference computes them,
exact pixel round trips, JSON, row selection."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.core.types import LABELS, Detections


def one(class_id: int, score: float, box: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array([box]), np.array([score]), np.array([class_id]))


def test_labels() -> None:
    assert LABELS == ("mask", "no_mask")
    assert one(0, 0.9, (0, 0, 1, 1)).labels == ["mask"]
    assert one(1, 0.9, (0, 0, 1, 1)).labels == ["no_mask"]
    assert Detections.from_labels(
        [(0, 0, 1, 1)] * 2, [0.5, 0.6], ["no_mask", "mask"]
    ).class_ids.tolist() == [1, 0]
    with pytest.raises(ValueError, match="unknown label"):
        Detections.from_labels([(0, 0, 1, 1)], [0.5], ["hat"])


@pytest.mark.parametrize(
    ("box", "size", "pixels"),
    [
        # 0.4794611 * 464 = 222.47 -> 222; 0.7057552 * 464 = 327.47 -> 327; 0.6 * 330 = 198.0
        (
            (0.47946113722566575, 0.15077478686179027, 0.7057552657818417, 0.6),
            (464, 330),
            (222, 49, 327, 198),
        ),
        # clipped to the image
        ((-0.05, -0.001, 1.2, 1.0001), (100, 50), (0, 0, 100, 50)),
        # truncation towards zero: -0.4 px becomes 0 before clipping, as int() does upstream
        ((-0.004, 0.5, 0.5, 0.6), (100, 100), (0, 50, 50, 60)),
        # a box entirely outside the right edge collapses onto it
        ((1.1, 0.2, 1.3, 0.4), (10, 10), (10, 2, 10, 4)),
    ],
)
def test_pixels_truncate_and_clip(
    box: tuple[float, float, float, float], size: tuple[int, int], pixels: tuple[int, ...]
) -> None:
    assert one(0, 0.9, box).pixels(*size).tolist() == [list(pixels)]


def test_pixel_boxes_round_trip_exactly() -> None:
    # 1 / 49 * 49 < 1: without the nudge a pixel would be lost to truncation
    rng = np.random.default_rng(1)
    for width, height in [(49, 49), (640, 480), (1280, 720), (16384, 3), (7, 16384)]:
        x = rng.integers(0, width + 1, size=(500, 2))
        y = rng.integers(0, height + 1, size=(500, 2))
        boxes = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
        dets = Detections.from_pixels(boxes, np.full(500, 0.5), np.zeros(500), width, height)
        np.testing.assert_array_equal(dets.pixels(width, height), boxes)
    every = np.arange(0, 50)
    boxes = np.stack([every, every, every, every], axis=1)
    dets = Detections.from_pixels(boxes, np.ones(50), np.ones(50), 49, 49)
    np.testing.assert_array_equal(dets.pixels(49, 49), boxes)


def test_to_json_and_min_sides() -> None:
    dets = Detections.concat([one(1, 0.75, (0.1, 0.2, 0.3, 0.4)), one(0, 0.1234567, (0, 0, 1, 1))])
    assert dets.to_json(200, 100) == [
        {"label": "no_mask", "score": 0.75, "box": [20, 20, 60, 40]},
        {"label": "mask", "score": 0.1234567, "box": [0, 0, 200, 100]},
    ]
    assert dets.to_json(200, 100, digits=3)[1]["score"] == 0.123
    assert dets.min_sides(200, 100).tolist() == [20, 100]
    assert dets.pixels_float(200, 100)[0] == pytest.approx([20.0, 20.0, 60.0, 40.0])


@pytest.mark.parametrize(
    ("xyxy", "scores", "class_ids", "message"),
    [
        (np.zeros((2, 4)), np.zeros(1), np.zeros(2), "differ in length"),
        (np.zeros((1, 4)), np.zeros(1), np.array([2]), "class ids"),
        (np.zeros((1, 4)), np.zeros(1), np.array([-1]), "class ids"),
        (np.zeros((1, 3)), np.zeros(1), np.zeros(1), "cannot reshape|differ"),
    ],
)
def test_shape_contract(
    xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Detections(xyxy, scores, class_ids)


def test_rows_and_immutability() -> None:
    dets = Detections.concat(
        [
            one(0, 0.9, (0, 0, 0.1, 0.1)),
            one(1, 0.8, (0.5, 0.5, 0.6, 0.6)),
            one(0, 0.7, (0, 0, 1, 1)),
        ]
    )
    assert len(dets) == 3 and len(Detections.empty()) == 0
    assert dets[1] == one(1, 0.8, (0.5, 0.5, 0.6, 0.6))
    assert dets[-1].scores.tolist() == [0.7]
    assert dets[dets.class_ids == 0].scores.tolist() == [0.9, 0.7]
    assert dets[[2, 0]].scores.tolist() == [0.7, 0.9]
    assert [len(row) for row in dets] == [1, 1, 1]
    assert Detections.concat([]) == Detections.empty()
    assert dets != dets[:2]
    with pytest.raises(ValueError):
        dets.scores[0] = 0.0  # read-only columns
    assert "no_mask 0.800" in repr(dets)


FACES = Detections.from_pixels(
    [(10, 10, 50, 60), (100, 20, 140, 70), (10, 10, 50, 60)], [0.9, 0.8, 0.7], [1, 0, 1], 640, 480
)


@pytest.mark.parametrize(
    ("boxes", "rows"),
    [
        ([(100, 20, 140, 70)], [1]),
        ([(10, 10, 50, 60)], [0]),  # a repeated box: its first row
        ([(100, 20, 140, 70), (10, 10, 50, 60)], [1, 0]),
        ([(100, 20, 140, 71)], [-1]),  # one pixel off: not that face
        (np.empty((0, 4)), []),
    ],
)
def test_index_of_finds_a_pixel_box_again(boxes: object, rows: list[int]) -> None:
    assert FACES.index_of(boxes, 640, 480).tolist() == rows


def test_index_of_an_empty_detections_and_of_every_round_tripped_box() -> None:
    assert Detections.empty().index_of([(1, 2, 3, 4)], 10, 10).tolist() == [-1]
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 1281, (300, 2)), rng.integers(0, 721, (300, 2))
    boxes = np.stack([x.min(1), y.min(1), x.max(1) + 1, y.max(1) + 1], axis=1)
    boxes = np.unique(np.minimum(boxes, [1280, 720, 1280, 720]), axis=0)
    dets = Detections.from_pixels(boxes, np.full(len(boxes), 0.5), np.zeros(len(boxes)), 1280, 720)
    assert dets.index_of(boxes[::-1], 1280, 720).tolist() == list(range(len(boxes)))[::-1]
