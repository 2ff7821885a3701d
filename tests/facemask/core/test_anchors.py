"""Anchors: count, order and values computed by hand from models/README.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facemask.core.anchors import (
    FEATURE_MAP_SIZES,
    NUM_ANCHORS,
    feature_map_sizes_for,
    generate_anchors,
    num_anchors,
)


@pytest.fixture(scope="module")
def anchors() -> np.ndarray:
    return generate_anchors()


def _box(cx: float, cy: float, size: float, ratio: float) -> list[float]:
    w, h = size * math.sqrt(ratio), size / math.sqrt(ratio)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_count_and_dtype(anchors: np.ndarray) -> None:
    # (33² + 17² + 9² + 5² + 3²) cells, 2 sizes + 2 extra ratios per cell.
    assert (1089 + 289 + 81 + 25 + 9) * 4 == 5972 == NUM_ANCHORS
    assert anchors.shape == (5972, 4)
    assert anchors.dtype == np.float64


def test_first_cell(anchors: np.ndarray) -> None:
    c = 0.5 / 33  # centre of row 0, column 0 of the 33x33 map
    np.testing.assert_allclose(anchors[0], [c - 0.02, c - 0.02, c + 0.02, c + 0.02], atol=1e-15)
    np.testing.assert_allclose(anchors[1], [c - 0.028, c - 0.028, c + 0.028, c + 0.028])
    # first size at ratio 0.62: w = 0.04 * 0.787401..., h = 0.04 / 0.787401...
    np.testing.assert_allclose(
        anchors[2], [c - 0.0157480, c - 0.0254000, c + 0.0157480, c + 0.0254000], atol=1e-7
    )
    np.testing.assert_allclose(anchors[3], _box(c, c, 0.04, 0.42))


def test_last_anchor(anchors: np.ndarray) -> None:
    # 3x3 map, row 2, column 2 (centre 2.5/3), size 0.64 at ratio 0.42:
    # w = 0.64 * 0.648074 = 0.414767, h = 0.64 / 0.648074 = 0.987542
    np.testing.assert_allclose(anchors[-1], [0.625950, 0.339563, 1.040717, 1.327104], atol=1e-6)


def test_order_is_level_row_column_anchor(anchors: np.ndarray) -> None:
    # index 4: level 0, row 0, column 1 -> x moves, y does not
    np.testing.assert_allclose(anchors[4], _box(1.5 / 33, 0.5 / 33, 0.04, 1))
    # index 33 * 4: level 0, row 1, column 0
    np.testing.assert_allclose(anchors[132], _box(0.5 / 33, 1.5 / 33, 0.04, 1))
    # level 1 starts after 33 * 33 * 4 anchors, with sizes 0.08 / 0.11
    first_l1 = 33 * 33 * 4
    np.testing.assert_allclose(anchors[first_l1], _box(0.5 / 17, 0.5 / 17, 0.08, 1))
    np.testing.assert_allclose(anchors[first_l1 + 1], _box(0.5 / 17, 0.5 / 17, 0.11, 1))
    np.testing.assert_allclose(anchors[first_l1 + 2], _box(0.5 / 17, 0.5 / 17, 0.08, 0.62))
    # level 4 (3x3, sizes 0.64 / 0.72) is the last 36 anchors
    np.testing.assert_allclose(anchors[5972 - 36 + 1], _box(0.5 / 3, 0.5 / 3, 0.72, 1))


def test_anchors_are_centred_on_cells(anchors: np.ndarray) -> None:
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    level0 = centres[: 33 * 33 * 4].reshape(33, 33, 4, 2)
    expected = (np.arange(33) + 0.5) / 33
    np.testing.assert_allclose(level0[:, :, 0, 0], np.tile(expected, (33, 1)), atol=1e-12)
    np.testing.assert_allclose(level0[:, :, 0, 1], np.tile(expected[:, None], (1, 33)), atol=1e-12)


def test_custom_configuration() -> None:
    out = generate_anchors(feature_map_sizes=(2,), anchor_sizes=((0.5,),), anchor_ratios=(1,))
    np.testing.assert_allclose(
        out,
        [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]],
    )


def test_mismatched_levels_rejected() -> None:
    with pytest.raises(ValueError, match="per feature map"):
        generate_anchors(feature_map_sizes=(33, 17), anchor_sizes=((0.04,),))


def test_feature_maps_follow_the_input_size(anchors: np.ndarray) -> None:
    assert feature_map_sizes_for(260) == FEATURE_MAP_SIZES == (33, 17, 9, 5, 3)
    # six ceil-halvings (maps after the 3rd..6th pool), then a 3x3 VALID convolution
    assert feature_map_sizes_for(320) == (40, 20, 10, 5, 3)
    assert feature_map_sizes_for(512) == (64, 32, 16, 8, 6)
    assert feature_map_sizes_for(129) == (17, 9, 5, 3, 1)
    with pytest.raises(ValueError, match="too small"):
        feature_map_sizes_for(128)
    np.testing.assert_array_equal(generate_anchors(input_size=(260, 260)), anchors)
    assert num_anchors() == NUM_ANCHORS
    big = generate_anchors(input_size=(320, 320))
    assert len(big) == num_anchors((320, 320)) == (1600 + 400 + 100 + 25 + 9) * 4
    with pytest.raises(ValueError, match="not both"):
        generate_anchors((33, 17, 9, 5, 3), input_size=(260, 260))


def test_non_square_input_has_its_own_rows_and_columns() -> None:
    wide = generate_anchors(input_size=(320, 260))  # 40 columns, 33 rows on level 0
    assert len(wide) == num_anchors((320, 260)) == (40 * 33 + 20 * 17 + 10 * 9 + 5 * 5 + 9) * 4
    np.testing.assert_allclose(wide[4], _box(1.5 / 40, 0.5 / 33, 0.04, 1))  # next column
    np.testing.assert_allclose(wide[40 * 4], _box(0.5 / 40, 1.5 / 33, 0.04, 1))  # next row
