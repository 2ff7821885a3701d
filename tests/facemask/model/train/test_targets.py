"""Anchor matching and augmentation: the targets decode to the faces, every face is
learned, and augmented boxes follow the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.core.anchors import generate_anchors
from facemask.core.boxes import decode_boxes, iou_matrix
from facemask.model.train.augment import NO_AUGMENT, AugmentConfig, augment
from facemask.model.train.targets import IGNORE, match_anchors


@pytest.fixture(scope="module")
def anchors() -> np.ndarray:
    return generate_anchors()


FACES = np.array(
    [
        [0.10, 0.10, 0.30, 0.35],  # medium
        [0.60, 0.50, 0.62, 0.53],  # tiny: below every anchor's IoU 0.4
        [0.40, 0.40, 0.95, 0.98],  # large
    ]
)
LABELS = np.array([0, 1, 1])


def test_positives_decode_to_their_faces_and_rules_hold(anchors: np.ndarray) -> None:
    loc, cls = match_anchors(anchors, FACES, LABELS)
    assert loc.shape == (len(anchors), 4) and loc.dtype == np.float32
    assert cls.shape == (len(anchors),) and cls.dtype == np.int32
    overlaps = iou_matrix(anchors, FACES)
    best = overlaps.max(axis=1)
    positive = cls > 0
    # every anchor reaching 0.4 is positive, with the label of its best face
    assert positive[best >= 0.4].all()
    strong = best >= 0.4
    assert (cls[strong] == LABELS[overlaps[strong].argmax(axis=1)] + 1).all()
    # between the thresholds: ignored, unless it is some face's best anchor
    forced = set(overlaps.argmax(axis=0).tolist())
    middle = np.flatnonzero((best >= 0.3) & (best < 0.4))
    assert all(cls[i] == IGNORE or i in forced for i in middle)
    assert (cls[(best < 0.3) & ~np.isin(np.arange(len(anchors)), list(forced))] == 0).all()
    # each face has at least its best anchor, the tiny one included
    for face in range(len(FACES)):
        assert cls[overlaps[:, face].argmax()] == LABELS[face] + 1
    # decoding a positive's target gives its face back
    faces_of = overlaps.argmax(axis=1)
    for index in np.flatnonzero(positive):
        face = faces_of[index]
        if index in forced:
            face = int(np.flatnonzero(overlaps.argmax(axis=0) == index)[-1])
        decoded = decode_boxes(
            loc[index : index + 1].astype(np.float64), anchors[index : index + 1]
        )
        np.testing.assert_allclose(decoded[0], FACES[face], atol=1e-6)
    assert not loc[~positive].any()


def test_an_image_without_faces_is_all_background(anchors: np.ndarray) -> None:
    loc, cls = match_anchors(anchors, np.empty((0, 4)), np.empty(0))
    assert not loc.any() and (cls == 0).all()


def _image_with_faces(boxes: np.ndarray, height: int = 120, width: int = 160) -> np.ndarray:
    """A dark image with a bright rectangle where each box is."""
    rgb = np.full((height, width, 3), 20, np.uint8)
    for x1, y1, x2, y2 in boxes:
        rgb[round(y1 * height) : round(y2 * height), round(x1 * width) : round(x2 * width)] = 230
    return rgb


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(zoom_out_p=1.0, flip_p=0.0),
        AugmentConfig(zoom_out_p=0.0, crop_p=1.0, flip_p=0.0),
        AugmentConfig(zoom_out_p=0.0, crop_p=0.0, flip_p=1.0),
        AugmentConfig(),
    ],
    ids=["zoom-out", "crop", "flip", "default"],
)
def test_augmented_boxes_follow_the_pixels(config: AugmentConfig) -> None:
    boxes = np.array([[0.1, 0.2, 0.4, 0.6], [0.6, 0.3, 0.9, 0.8]])
    rgb = _image_with_faces(boxes)
    for seed in range(10):
        image, out_boxes, labels = augment(
            rgb, boxes, np.array([0, 1]), np.random.default_rng(seed), 96, config
        )
        assert image.shape == (96, 96, 3) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert len(out_boxes) == len(labels) >= 0
        gray = image.mean(axis=2)
        for x1, y1, x2, y2 in out_boxes:
            # the box's inner part is the bright rectangle, whatever was done to it
            inner = gray[int(y1 * 96) + 2 : int(y2 * 96) - 2, int(x1 * 96) + 2 : int(x2 * 96) - 2]
            if inner.size:
                assert inner.mean() > gray.mean()


def test_augment_is_deterministic_per_generator_and_zoom_out_shrinks_faces() -> None:
    boxes = np.array([[0.3, 0.3, 0.7, 0.7]])
    rgb = _image_with_faces(boxes)
    config = AugmentConfig(zoom_out_p=1.0, zoom_out_max=3.0)
    a = augment(rgb, boxes, np.array([0]), np.random.default_rng(5), 64, config)
    b = augment(rgb, boxes, np.array([0]), np.random.default_rng(5), 64, config)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    sizes = []
    for seed in range(20):
        _, out, _ = augment(rgb, boxes, np.array([0]), np.random.default_rng(seed), 64, config)
        sizes.append(float(out[0, 2] - out[0, 0]))
    assert max(sizes) <= 0.4 + 1e-6 and min(sizes) < 0.2


def test_no_augment_is_the_inference_resize() -> None:
    from facemask.core.preprocess import preprocess

    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    image, boxes, _ = augment(
        rgb,
        np.array([[0.1, 0.1, 0.5, 0.5]]),
        np.array([1]),
        np.random.default_rng(0),
        260,
        NO_AUGMENT,
    )
    np.testing.assert_array_equal(image, preprocess(rgb))
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.5, 0.5]], rtol=1e-6)
