"""Tiling specs, tile windows and the merge of per-window detections."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.core.nms import nms
from facemask.core.tiling import (
    DEFAULT_OVERLAP,
    MAX_TILES,
    TileSpec,
    TileSpecError,
    crop,
    map_detections,
    parse_tiles,
    tile_windows,
)
from facemask.core.types import Detections


def test_parse_forms() -> None:
    assert TileSpec.parse("2x2") == TileSpec(2, 2, DEFAULT_OVERLAP)
    assert TileSpec.parse("3x2:0.25") == TileSpec(3, 2, 0.25)
    assert TileSpec.parse(" 2X3 : 0.1 ") == TileSpec(2, 3, 0.1)
    assert TileSpec.parse("off") is None
    assert TileSpec.parse("1x1") is None
    assert parse_tiles(None) is None
    auto = TileSpec.parse("auto:16")
    assert auto is not None and auto.auto_min_face_px == 16
    assert str(TileSpec.parse("2x2:0.2")) == "2x2:0.2"
    assert TileSpec.parse(str(TileSpec(3, 2, 0.25))) == TileSpec(3, 2, 0.25)


@pytest.mark.parametrize(
    "text", ["2", "2x", "x2", "0x2", "9x9", "2x2:0.5", "2x2:-1", "auto:0", "big"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(TileSpecError):
        TileSpec.parse(text)


def test_windows_full_first_cover_and_overlap() -> None:
    windows = tile_windows(1280, 720, TileSpec(2, 2, 0.2))
    assert windows[0] == (0, 0, 1280, 720)
    assert len(windows) == 5
    tiles = windows[1:]
    # Corners of the frame are covered, tiles stay inside it.
    assert tiles[0][:2] == (0, 0) and tiles[-1][2:] == (1280, 720)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
    # Neighbours overlap by about 20 % of a tile.
    (ax0, _, ax1, _), (bx0, _, bx1, _) = tiles[0], tiles[1]
    assert ax1 > bx0
    assert (ax1 - bx0) == pytest.approx(0.2 * (ax1 - ax0), abs=2)
    assert (ax1 - ax0) == pytest.approx(bx1 - bx0, abs=1)


def test_windows_without_full_and_no_spec() -> None:
    assert tile_windows(100, 50, None) == [(0, 0, 100, 50)]
    windows = tile_windows(100, 50, TileSpec(1, 2, 0.0, include_full=False))
    assert windows == [(0, 0, 50, 50), (50, 0, 100, 50)]


def test_auto_grid_grows_with_frame_and_shrinks_with_face() -> None:
    assert TileSpec.auto(260, 260, 20) is None
    hd = TileSpec.auto(1280, 720, 20)
    assert hd is not None and hd.cols >= hd.rows >= 2
    small_faces = TileSpec.auto(1280, 720, 12)
    assert small_faces is not None and small_faces.cols >= hd.cols
    spec = TileSpec.parse("auto:20")
    assert spec is not None
    assert len(tile_windows(1280, 720, spec)) == hd.windows_per_frame
    assert tile_windows(200, 200, spec) == [(0, 0, 200, 200)]


def test_crop_maps_reduced_decodes() -> None:
    rgb = np.zeros((360, 640, 3), dtype=np.uint8)  # a 1280x720 frame decoded at 1/2
    part = crop(rgb, (640, 360, 1280, 720), 1280, 720)
    assert part.shape == (180, 320, 3)
    full = np.zeros((720, 1280, 3), dtype=np.uint8)
    assert crop(full, (10, 20, 110, 220), 1280, 720).shape == (200, 100, 3)


def _det(box: tuple[float, float, float, float], score: float = 0.9, cls: int = 0) -> Detections:
    return Detections(np.array([box]), np.array([score]), np.array([cls]))


def _dets(*rows: Detections) -> Detections:
    return Detections.concat(list(rows))


NONE = Detections.empty()


def test_single_full_window_is_passthrough() -> None:
    dets = _dets(_det((0.1, 0.1, 0.2, 0.2)), _det((0.12, 0.1, 0.21, 0.2), 0.8))
    assert map_detections([dets], [(0, 0, 100, 100)], 100, 100, iou=0.4) == dets


def test_tile_boxes_map_to_frame_coordinates() -> None:
    windows = [(0, 0, 200, 100), (100, 0, 200, 100)]
    tile_det = _det((0.25, 0.2, 0.5, 0.4))  # pixels 125..150 x 20..40 of the frame
    out = map_detections([NONE, tile_det], windows, 200, 100, iou=0.4)
    assert len(out) == 1
    assert out.xyxy[0] == pytest.approx((0.625, 0.2, 0.75, 0.4))
    assert out.scores[0] == tile_det.scores[0] and out.class_ids[0] == tile_det.class_ids[0]


def test_inner_border_boxes_dropped_frame_border_kept() -> None:
    windows = [(0, 0, 100, 100), (40, 0, 100, 100)]  # the tile's left edge is inner
    cut = _det((0.0, 0.3, 0.2, 0.5))  # touches x=40 of the frame: cut by the tile
    at_frame_edge = _det((0.8, 0.0, 1.0, 0.2), 0.7)  # touches the frame's right/top border
    out = map_detections([NONE, _dets(cut, at_frame_edge)], windows, 100, 100, iou=0.4)
    assert len(out) == 1
    assert out.xyxy[0] == pytest.approx((0.88, 0.0, 1.0, 0.2))


def test_duplicates_merge_by_nms_keeping_best() -> None:
    windows = [(0, 0, 100, 100), (0, 0, 60, 60)]
    from_full = _det((0.2, 0.2, 0.4, 0.4), 0.6, cls=1)
    from_tile = _det((0.2 / 0.6, 0.2 / 0.6, 0.4 / 0.6, 0.4 / 0.6), 0.9, cls=0)
    out = map_detections([from_full, from_tile], windows, 100, 100, iou=0.4)
    assert len(out) == 1 and out.scores[0] == 0.9 and out.class_ids[0] == 0
    per_class = map_detections(
        [from_full, from_tile], windows, 100, 100, iou=0.4, class_agnostic=False
    )
    assert per_class.scores.tolist() == [0.9, 0.6]


def test_merge_matches_reference_nms_on_union() -> None:
    rng = np.random.default_rng(0)
    windows = [(0, 0, 100, 100), (0, 0, 100, 100)]
    lists = []
    for _ in windows:
        xy = rng.uniform(0, 0.8, size=(20, 2))
        wh = rng.uniform(0.05, 0.2, size=(20, 2))
        scores = rng.uniform(0.1, 1, size=20)
        lists.append(Detections(np.concatenate([xy, xy + wh], axis=1), scores, np.zeros(20)))
    union = Detections.concat(lists)
    expected = union[nms(union.xyxy, union.scores, -1.0, 0.4)]
    assert map_detections(lists, windows, 100, 100, iou=0.4) == expected


def test_length_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        map_detections([NONE], [(0, 0, 1, 1), (0, 0, 1, 1)], 1, 1, iou=0.4)


@pytest.mark.parametrize(
    ("spec", "max_tiles", "inputs"),
    [
        (TileSpec(2, 2), 4, 5),
        (TileSpec(8, 8), MAX_TILES, 65),
        (TileSpec(3, 3), 9, 10),
    ],
)
def test_fixed_grid_costs_rows_times_cols_plus_one(
    spec: TileSpec, max_tiles: int, inputs: int
) -> None:
    assert spec.check(max_tiles).inputs(1920, 1080, max_tiles) == inputs
    assert len(tile_windows(1920, 1080, spec, max_tiles)) == inputs


@pytest.mark.parametrize(("spec", "max_tiles"), [(TileSpec(8, 8), 16), (TileSpec(3, 3), 8)])
def test_fixed_grid_over_max_tiles_is_rejected(spec: TileSpec, max_tiles: int) -> None:
    with pytest.raises(TileSpecError, match="max_tiles"):
        spec.check(max_tiles)
    with pytest.raises(TileSpecError, match="max_tiles"):
        tile_windows(1920, 1080, spec, max_tiles)


@pytest.mark.parametrize("max_tiles", [1, 2, 4, 6, 16, MAX_TILES])
def test_auto_grid_is_capped_by_max_tiles(max_tiles: int) -> None:
    auto = TileSpec.parse("auto:4")  # tiny faces in a huge frame: wants the largest grid
    assert auto is not None
    uncapped = auto.resolve(16000, 9000)
    assert uncapped is not None and uncapped.rows * uncapped.cols == MAX_TILES
    capped = auto.check(max_tiles).resolve(16000, 9000, max_tiles)
    tiles = 0 if capped is None else capped.rows * capped.cols
    assert tiles <= max_tiles
    assert auto.inputs(16000, 9000, max_tiles) == (1 if capped is None else tiles + 1)
    assert len(tile_windows(16000, 9000, auto, max_tiles)) == auto.inputs(16000, 9000, max_tiles)
