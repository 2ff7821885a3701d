"""Greedy class-agnostic NMS and per-image post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.core.anchors import generate_anchors
from facemask.core.nms import nms, postprocess


def _boxes(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def test_no_boxes() -> None:
    keep = nms(np.zeros((0, 4)), np.zeros(0, np.float32), 0.5, 0.4)
    assert keep.shape == (0,)


def test_all_below_threshold() -> None:
    boxes = _boxes([0, 0, 1, 1], [2, 2, 3, 3])
    assert nms(boxes, np.array([0.1, 0.49], np.float32), 0.5, 0.4).size == 0


def test_score_equal_to_threshold_is_not_a_candidate() -> None:
    boxes = _boxes([0, 0, 1, 1], [2, 2, 3, 3])
    keep = nms(boxes, np.array([0.5, 0.75], np.float32), 0.5, 0.4)
    assert keep.tolist() == [1]


def test_single_box() -> None:
    assert nms(_boxes([0.1, 0.1, 0.2, 0.2]), np.array([0.9]), 0.5, 0.4).tolist() == [0]


def test_identical_boxes_keep_the_best() -> None:
    boxes = _boxes([0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.3, 0.3])
    keep = nms(boxes, np.array([0.6, 0.9, 0.7], np.float32), 0.5, 0.4)
    assert keep.tolist() == [1]


def test_equal_scores_prefer_the_higher_index() -> None:
    boxes = _boxes([0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.7, 0.7])
    keep = nms(boxes, np.array([0.8, 0.8, 0.8], np.float32), 0.5, 0.4)
    assert keep.tolist() == [2, 1]


def test_disjoint_boxes_all_kept_best_first() -> None:
    boxes = _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.8, 0.8, 0.9, 0.9])
    keep = nms(boxes, np.array([0.6, 0.95, 0.7], np.float32), 0.5, 0.4)
    assert keep.tolist() == [1, 2, 0]


def test_iou_uses_the_upstream_area_epsilon() -> None:
    # Half-overlapping unit squares: plain IoU = 0.5 / 1.5 = 0.33333; with upstream's
    # (w + 1e-3)(h + 1e-3) areas it is 0.5 / (2 * 1.002001 - 0.5) = 0.332446.
    boxes = _boxes([0, 0, 1, 1], [0.5, 0, 1.5, 1])
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.5, 0.333).tolist() == [0, 1]  # 0.332446 <= 0.333: kept
    assert nms(boxes, scores, 0.5, 0.332).tolist() == [0]  # 0.332446 > 0.332: suppressed


def test_iou_threshold_boundary() -> None:
    boxes = _boxes([0, 0, 1, 1], [0.5, 0, 1.5, 1])
    scores = np.array([0.9, 0.8], np.float32)
    iou = 0.5 / (1.001 * 1.001 + 1.001 * 1.001 - 0.5)
    assert nms(boxes, scores, 0.5, iou).tolist() == [0, 1]  # equal: not suppressed
    assert nms(boxes, scores, 0.5, float(np.nextafter(iou, 0))).tolist() == [0]


def test_suppression_is_greedy() -> None:
    # a overlaps b, b overlaps c, a does not overlap c: a suppresses b, so c survives.
    boxes = _boxes([0, 0, 1, 1], [0.6, 0, 1.6, 1], [1.2, 0, 2.2, 1])
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5, 0.2)
    assert keep.tolist() == [0, 2]


def test_max_detections() -> None:
    boxes = _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.8, 0.8, 0.9, 0.9])
    scores = np.array([0.6, 0.95, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, 0.4, max_detections=2).tolist() == [1, 2]
    assert nms(boxes, scores, 0.5, 0.4, max_detections=0).size == 0


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5, 0.4)


@pytest.fixture(scope="module")
def anchors() -> np.ndarray:
    return generate_anchors()


def test_postprocess_one_class_and_argmax(anchors: np.ndarray) -> None:
    loc = np.zeros((5972, 4), np.float32)  # boxes = anchors
    cls = np.zeros((5972, 2), np.float32)
    cls[10] = [0.2, 0.9]  # no_mask
    cls[5971] = [0.8, 0.1]  # mask
    dets = postprocess(loc, cls, anchors, 0.5, 0.4)
    assert list(zip(dets.class_ids.tolist(), dets.labels)) == [(1, "no_mask"), (0, "mask")]
    assert dets.scores[0] == pytest.approx(0.9)
    assert dets.xyxy[0] == pytest.approx(anchors[10])
    assert dets.xyxy[1] == pytest.approx(anchors[5971])
    assert dets.xyxy.dtype == np.float64
    assert len(postprocess(loc, cls, anchors, 0.95, 0.4)) == 0


def test_postprocess_suppresses_across_classes(anchors: np.ndarray) -> None:
    loc = np.zeros((5972, 4), np.float32)
    cls = np.zeros((5972, 2), np.float32)
    cls[0] = [0.7, 0.0]  # mask, first anchor of the first cell
    cls[1] = [0.0, 0.8]  # no_mask, second anchor of the same cell: IoU 0.48
    dets = postprocess(loc, cls, anchors, 0.5, 0.4)
    assert dets.labels == ["no_mask"]
    assert len(postprocess(loc, cls, anchors, 0.5, 0.6)) == 2


def test_postprocess_decodes_boxes(anchors: np.ndarray) -> None:
    loc = np.zeros((5972, 4), np.float32)
    loc[100] = [1.0, 0.0, 0.0, 0.0]  # shift by 0.1 anchor widths
    cls = np.zeros((5972, 2), np.float32)
    cls[100] = [0.9, 0.1]
    det = postprocess(loc, cls, anchors, 0.5, 0.4)
    assert len(det) == 1
    width = anchors[100, 2] - anchors[100, 0]
    assert det.xyxy[0, 0] == pytest.approx(anchors[100, 0] + 0.1 * width)
    assert det.xyxy[0, 2] == pytest.approx(anchors[100, 2] + 0.1 * width)
