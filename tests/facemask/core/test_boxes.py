"""Box decoding with variances [0.1, 0.1, 0.2, 0.2]."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facemask.core.boxes import decode_boxes

ANCHORS = np.array([[0.2, 0.2, 0.4, 0.6], [0.0, 0.0, 1.0, 1.0]])


def test_hand_computed_example() -> None:
    # anchor 0: centre (0.3, 0.4), size 0.2 x 0.4
    # raw (1, -2, 0, ln2 / 0.2) -> scaled (0.1, -0.2, 0, ln2)
    # centre (0.3 + 0.1*0.2, 0.4 - 0.2*0.4) = (0.32, 0.32); size (0.2, 0.8)
    raw = np.array([[1.0, -2.0, 0.0, math.log(2) / 0.2], [0.0, 0.0, 0.0, 0.0]], np.float32)
    out = decode_boxes(raw, ANCHORS)
    np.testing.assert_allclose(out[0], [0.22, -0.08, 0.42, 0.72], atol=1e-7)
    # zero offsets give the anchor back
    np.testing.assert_allclose(out[1], ANCHORS[1])
    assert out.dtype == np.float64


def test_result_is_not_clipped() -> None:
    raw = np.array([[0.0, 0.0, 5.0, 5.0]], np.float32)  # exp(1) times the anchor size
    out = decode_boxes(raw, ANCHORS[1:])
    e = math.e
    np.testing.assert_allclose(out[0], [0.5 - e / 2, 0.5 - e / 2, 0.5 + e / 2, 0.5 + e / 2])


def test_batched_equals_per_image() -> None:
    rng = np.random.default_rng(1)
    anchors = rng.uniform(0, 1, (50, 4))
    raw = rng.normal(size=(3, 50, 4)).astype(np.float32)
    batched = decode_boxes(raw, anchors)
    assert batched.shape == (3, 50, 4)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], decode_boxes(raw[i], anchors))


def test_custom_variances() -> None:
    raw = np.array([[1.0, 1.0, 0.0, 0.0]])
    out = decode_boxes(raw, ANCHORS[1:], variances=(1.0, 0.5, 1.0, 1.0))
    np.testing.assert_allclose(out[0], [1.0, 0.5, 2.0, 1.5])


def test_bad_shape_rejected() -> None:
    with pytest.raises(ValueError):
        decode_boxes(np.zeros((2, 3)), ANCHORS)


def test_encode_then_decode_gives_the_boxes_back() -> None:
    from facemask.core.anchors import generate_anchors
    from facemask.core.boxes import encode_boxes

    anchors = generate_anchors()
    rng = np.random.default_rng(1)
    centre = rng.uniform(0.0, 1.0, (len(anchors), 2))
    size = rng.uniform(0.005, 0.9, (len(anchors), 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    raw = encode_boxes(boxes, anchors)
    np.testing.assert_allclose(decode_boxes(raw, anchors), boxes, rtol=0, atol=1e-12)
    # float32, as the model outputs it: within float32 rounding of the box
    np.testing.assert_allclose(
        decode_boxes(raw.astype(np.float32), anchors), boxes, rtol=0, atol=1e-5
    )


def test_encode_is_the_hand_computed_inverse() -> None:
    from facemask.core.boxes import encode_boxes

    # the hand-computed example above, backwards
    raw = encode_boxes(np.array([[0.22, -0.08, 0.42, 0.72]]), ANCHORS[:1])
    np.testing.assert_allclose(raw, [[1.0, -2.0, 0.0, math.log(2) / 0.2]], atol=1e-12)
    with pytest.raises(ValueError, match="positive width and height"):
        encode_boxes(np.array([[0.5, 0.5, 0.5, 0.6]]), ANCHORS[:1])
