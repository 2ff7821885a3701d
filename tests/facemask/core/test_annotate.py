"""Annotated images: green boxes for mask, red for no_mask, with a label; highlighted rows
(an alert's violators) in their own colour; crops of boxes beside the picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facemask.core.annotate import (
    COLOURS_RGB,
    HIGHLIGHT_RGB,
    MIN_FONT_SCALE,
    MUTED_RGB,
    annotate,
    colour,
    crops_beside,
)
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


# -- issue 14: the violator singled out, crops beside the picture ------------------------

AMBER = HIGHLIGHT_RGB
SECOND_BARE = Detections(np.array([(0.35, 0.3, 0.55, 0.8)]), np.array([0.93]), np.array([1]))
THREE = Detections.concat([MASK, NO_MASK, SECOND_BARE])  # rows: mask, no_mask, no_mask


@pytest.mark.parametrize(
    "highlight",
    [[2], np.array([2]), np.array([False, False, True]), (2,)],
    ids=["list", "indices", "mask", "tuple"],
)
def test_highlighted_rows_have_their_own_colour(highlight: object) -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    out = annotate(image, THREE, highlight=highlight)
    assert tuple(out[130, 40]) == (0, 255, 0)  # mask: green
    assert tuple(out[130, 240]) == (255, 0, 0)  # the other no_mask: still red
    assert tuple(out[130, 141]) == AMBER  # the highlighted no_mask (x1 = 140)
    assert AMBER not in (COLOURS_RGB["mask"], COLOURS_RGB["no_mask"])
    bgr = annotate(image, THREE, highlight=highlight, bgr=True)
    assert tuple(bgr[130, 141]) == AMBER[::-1]


def test_highlighted_rows_are_drawn_on_top() -> None:
    # Two boxes sharing their left edge: the highlighted one wins, whatever the row order.
    left = Detections(np.array([(0.1, 0.3, 0.3, 0.8), (0.1, 0.3, 0.5, 0.8)]), [0.9, 0.8], [1, 1])
    for rows in ([0], [1]):
        out = annotate(np.zeros((200, 400, 3), np.uint8), left, highlight=rows)
        assert tuple(out[130, 41]) == AMBER, rows


@pytest.mark.parametrize(
    ("muted", "highlight", "grey_at", "red_at"),
    [
        # rows: mask (x1 = 40), no_mask (x1 = 240), no_mask (x1 = 140)
        ([2], None, [(130, 140)], [(130, 240)]),  # the muted no_mask is grey, the other red
        (np.array([False, True, False]), None, [(130, 240)], [(130, 140)]),
        ([1], [1], [], [(130, 140)]),  # highlighted wins over muted
        ([], None, [], [(130, 140), (130, 240)]),
    ],
    ids=["indices", "mask", "highlight-wins", "none"],
)
def test_muted_rows_are_grey_and_say_ignored(
    muted: object,
    highlight: object,
    grey_at: list[tuple[int, int]],
    red_at: list[tuple[int, int]],
) -> None:
    out = annotate(np.zeros((200, 400, 3), np.uint8), THREE, muted=muted, highlight=highlight)
    for y, x in grey_at:
        assert tuple(out[y, x]) == MUTED_RGB, (y, x)
    for y, x in red_at:
        assert tuple(out[y, x]) == COLOURS_RGB["no_mask"], (y, x)
    assert tuple(out[130, 40]) == COLOURS_RGB["mask"]


def test_a_muted_label_is_wider_by_the_word_ignored() -> None:
    out = annotate(np.zeros((200, 400, 3), np.uint8), NO_MASK, muted=[0])
    font = cv2.FONT_HERSHEY_SIMPLEX
    (width, _), _ = cv2.getTextSize("no_mask 0.77 ignored", font, MIN_FONT_SCALE, 1)
    strip = np.nonzero((out[55, :] == MUTED_RGB).all(axis=1))[0]
    assert strip.max() - strip.min() == width + 4


def test_labels_name_the_class_and_score_and_can_be_limited() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    every = annotate(image, THREE)
    only = annotate(image, THREE, highlight=[2], labelled=[2])
    # The strip above each box (the label) exists only for labelled rows.
    assert (0, 255, 0) in _colours(every[40:59, 41:120])
    assert (0, 255, 0) not in _colours(only[40:59, 41:120])
    assert AMBER in _colours(only[40:59, 141:220])
    # The text is "<label> <score>": the strip is as wide as cv2 measures that text.
    font = cv2.FONT_HERSHEY_SIMPLEX
    (width_label, _), _ = cv2.getTextSize("no_mask 0.93", font, MIN_FONT_SCALE, 1)
    strip = np.nonzero((only[55, :] == AMBER).all(axis=1))[0]
    assert strip.min() == 140 and strip.max() - strip.min() == width_label + 4


def test_a_small_picture_keeps_a_legible_font() -> None:
    # 160 px wide: the label is drawn at MIN_FONT_SCALE (~8 px high), not smaller.
    image = np.zeros((90, 160, 3), np.uint8)
    out = annotate(image, Detections(np.array([(0.1, 0.4, 0.5, 0.9)]), [0.9], [1]))
    strip = [y for y in range(36) if (out[y, 16:60] == (255, 0, 0)).all(axis=1).any()]
    assert len(strip) >= 10  # the label strip above the box top (y = 36)


@pytest.mark.parametrize(
    ("highlight", "error"),
    [(np.array([True, False]), ValueError), ([5], IndexError)],
    ids=["short-mask", "missing-row"],
)
def test_bad_highlight_rows_are_refused(highlight: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        annotate(np.zeros((20, 20, 3), np.uint8), THREE, highlight=highlight)


def _patch_source(height: int = 200, width: int = 400) -> np.ndarray:
    source = np.full((height, width, 3), 100, np.uint8)
    source[80:120, 280:320] = (10, 200, 250)  # the face to crop
    return source


def test_crops_beside_show_each_box_from_the_source() -> None:
    source = _patch_source()
    drawn = source.copy()
    drawn[:, :, 0] = 0  # the drawn picture differs: the crop must come from the source
    out = crops_beside(drawn, source, [(280, 80, 320, 120)])
    assert out.shape == (200, 400 + 133, 3)
    np.testing.assert_array_equal(out[:, :400], drawn)
    panel = out[:, 400:]
    assert AMBER in _colours(panel)  # framed in the highlight colour
    # The 40 px face widened by 25 % a side (60 px) fills the panel's width: twice as large.
    assert tuple(panel[100, 66]) == (10, 200, 250)
    face = np.nonzero((panel == (10, 200, 250)).all(axis=2))
    assert face[1].max() - face[1].min() > 70


def test_crops_beside_stack_several_and_clip_at_the_edges() -> None:
    source = _patch_source()
    boxes = [(0, 0, 40, 40), (280, 80, 320, 120), (380, 180, 400, 200)]
    out = crops_beside(source, source, boxes, share=0.5, max_crops=2, bgr=True)
    assert out.shape == (200, 600, 3)
    panel = out[:, 400:]
    top, bottom = panel[:100], panel[100:]
    assert (10, 200, 250) not in _colours(top) and (10, 200, 250) in _colours(bottom)
    assert AMBER[::-1] in _colours(panel)  # BGR order
    # Only max_crops cells: the third box is not drawn (the panel has two cells).
    assert crops_beside(source, source, boxes[2:]).shape == (200, 533, 3)


def test_crops_beside_without_boxes_or_with_a_mismatched_source() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    assert crops_beside(image, image, np.empty((0, 4))) is image
    with pytest.raises(ValueError, match="differ in size"):
        crops_beside(image, np.zeros((30, 41, 3), np.uint8), [(0, 0, 5, 5)])
