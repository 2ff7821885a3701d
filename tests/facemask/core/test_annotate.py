"""Annotated images: green boxes for mask, red for no_mask, with a label."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.core.annotate import annotate, colour
from facemask.core.types import Detections

MASK = Detections(np.array([(0.1, 0.3, 0.4, 0.8)]), np.array([0.91]), np.array([0]))
NO_MASK = Detections(np.array([(0.6, 0.3, 0.9, 0.8)]), np.array([0.77]), np.array([1]))


def _colours(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in px) for px in image.reshape(-1, 3)}


def test_box_colours_rgb() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    out = annotate(image, Detections.concat([MASK, NO_MASK]))
    # left edge of each box, below the label strip
    assert tuple(out[130, 40]) == (0, 255, 0)  # mask: green
    assert tuple(out[130, 240]) == (255, 0, 0)  # no_mask: red
    assert tuple(out[130, 100]) == (0, 0, 0)  # inside the box: untouched
    assert not out[:, :30].any()  # left of everything: untouched
    assert not image.any()  # the input is not drawn on


def test_box_colours_bgr_and_in_place() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    out = annotate(image, NO_MASK, bgr=True, copy=False)
    assert out is image
    assert tuple(image[130, 240]) == (0, 0, 255)
    assert colour("no_mask", bgr=True) == (0, 0, 255)
    assert colour("mask") == (0, 255, 0)


def test_label_text_is_drawn() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    out = annotate(image, MASK)
    # the label strip above the box holds dark text on the box colour
    strip = out[40:59, 41:120]
    assert (0, 255, 0) in _colours(strip)
    assert any(px != (0, 255, 0) and px[1] < 128 for px in _colours(strip))


def test_no_detections_and_box_at_the_top_edge() -> None:
    image = np.full((50, 50, 3), 7, np.uint8)
    np.testing.assert_array_equal(annotate(image, Detections.empty()), image)
    out = annotate(
        image, Detections(np.array([(0.0, 0.0, 0.5, 0.5)]), np.array([0.5]), np.array([1]))
    )
    assert tuple(out[1, 1]) == (255, 0, 0)


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        annotate(np.zeros((10, 10), np.uint8), Detections.empty())
