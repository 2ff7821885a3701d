"""The Detection type: labels, pixel boxes as the reference computes them, JSON."""

from __future__ import annotations

import dataclasses

import pytest

from facemask.core.types import LABELS, Detection


def test_labels() -> None:
    assert LABELS == ("mask", "no_mask")
    assert Detection(0, 0.9, (0, 0, 1, 1)).label == "mask"
    assert Detection(1, 0.9, (0, 0, 1, 1)).label == "no_mask"


def test_box_pixels_truncates() -> None:
    det = Detection(0, 0.9, (0.47946113722566575, 0.15077478686179027, 0.7057552657818417, 0.6))
    # 0.4794611 * 464 = 222.47 -> 222; 0.7057552 * 464 = 327.47 -> 327; 0.6 * 330 = 198.0
    assert det.box_pixels(464, 330) == (222, 49, 327, 198)


def test_box_pixels_clips_to_the_image() -> None:
    det = Detection(1, 0.8, (-0.05, -0.001, 1.2, 1.0001))
    assert det.box_pixels(100, 50) == (0, 0, 100, 50)
    # truncation towards zero: -0.5 px becomes 0 before clipping, as int() does upstream
    assert Detection(1, 0.8, (-0.004, 0.5, 0.5, 0.6)).box_pixels(100, 100)[0] == 0
    # a box entirely outside the right edge collapses onto it
    assert Detection(0, 0.6, (1.1, 0.2, 1.3, 0.4)).box_pixels(10, 10) == (10, 2, 10, 4)


def test_to_json() -> None:
    det = Detection(1, 0.75, (0.1, 0.2, 0.3, 0.4))
    assert det.to_json(200, 100) == {"label": "no_mask", "score": 0.75, "box": [20, 20, 60, 40]}


def test_frozen() -> None:
    det = Detection(0, 0.9, (0, 0, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.score = 0.1  # type: ignore[misc]
