"""Tiled inference: the full frame plus a grid of overlapping tiles, merged by NMS.

The model squeezes the whole frame into 260x260, so a 20 px face in a 1280x720 frame
becomes about 4 px and is missed. Running the model also on an R x C grid of overlapping
crops (each resized to 260x260 on its own) shows it small faces at 2-3x the scale. This
module is pure numpy: the pixel windows of a :class:`TileSpec`, and the merge of the
detections of every window back into frame-normalised coordinates.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facemask.core.nms import nms
from facemask.core.preprocess import INPUT_SIZE
from facemask.core.types import Detections

Window = tuple[int, int, int, int]
"""A pixel window ``(x0, y0, x1, y1)`` of a frame (``x1``, ``y1`` exclusive)."""

DEFAULT_OVERLAP = 0.3
"""Overlap of neighbouring tiles (fraction of a tile), chosen on the dev set: with 2x2 tiles 0.3
gave the best AP50 of 0.1, 0.2, 0.3 and 0.4 (float boxes; a tie with 0.1 on integer boxes)."""
MAX_GRID = 8
MAX_TILES = MAX_GRID * MAX_GRID
"""The absolute cap on tiles per frame; a service configures a lower one (``max_tiles``).
Every tile is one more model input: a frame with an R x C grid costs R*C+1 of them."""
OFF_WORDS = frozenset({"off", "none", "1x1", ""})
_SPEC_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?::\s*([0-9]*\.?[0-9]+)\s*)?$")
_AUTO_RE = re.compile(r"^\s*auto\s*(?::\s*(\d+)\s*)?$")
DEFAULT_AUTO_MIN_FACE_PX = 20
# The smallest anchors are 0.04 x 260 = 10.4 px; a face of about 2x that size is found
# reliably. ``auto`` picks the grid that brings ``min_face_px`` to this size in the model
# input.
TARGET_FACE_PX = 20.0
# A box whose edge lies within this many pixels of an inner tile border is taken as cut.
BORDER_MARGIN_PX = 2.0


class TileSpecError(ValueError):
    """A tiling spec that cannot be parsed or is out of range."""


@dataclass(frozen=True, slots=True)
class TileSpec:
    """The full frame (when ``include_full``) plus a ``rows`` x ``cols`` grid of tiles,
    neighbours overlapping by ``overlap`` of a tile's size.

    ``auto_min_face_px`` set means "choose the grid per frame" (:meth:`resolve`): the grid
    that shows a face of that many pixels at about 20 px in the model input.
    """

    rows: int
    cols: int
    overlap: float = DEFAULT_OVERLAP
    include_full: bool = True
    auto_min_face_px: int | None = None

    def __post_init__(self) -> None:
        if not (1 <= self.rows <= MAX_GRID and 1 <= self.cols <= MAX_GRID):
            raise TileSpecError(f"tile grid must be 1..{MAX_GRID} x 1..{MAX_GRID}")
        if not 0.0 <= self.overlap < 0.5:
            raise TileSpecError(f"overlap must be in [0, 0.5), got {self.overlap}")
        if self.auto_min_face_px is not None and self.auto_min_face_px < 1:
            raise TileSpecError("auto minimum face size must be >= 1 px")

    @classmethod
    def parse(cls, text: str) -> TileSpec | None:
        """``"2x2"``, ``"3x2:0.25"`` (rows x cols, optional overlap fraction), ``"auto"`` or
        ``"auto:16"`` (smallest face in pixels); ``"off"`` / ``"none"`` / ``"1x1"`` -> None.

        Raises :class:`TileSpecError` on anything else.
        """
        if text.strip().lower() in OFF_WORDS:
            return None
        auto = _AUTO_RE.match(text.lower())
        if auto:
            size = int(auto.group(1)) if auto.group(1) else DEFAULT_AUTO_MIN_FACE_PX
            return cls(1, 1, auto_min_face_px=size)
        match = _SPEC_RE.match(text)
        if not match:
            raise TileSpecError(
                f"bad tile spec {text!r}: expected ROWSxCOLS[:OVERLAP] (e.g. 2x2, 2x2:0.2), "
                "auto[:MIN_FACE_PX] or off"
            )
        rows, cols = int(match.group(1)), int(match.group(2))
        overlap = float(match.group(3)) if match.group(3) else DEFAULT_OVERLAP
        if rows == 1 and cols == 1:
            return None
        return cls(rows, cols, overlap)

    @classmethod
    def auto(
        cls,
        width: int,
        height: int,
        min_face_px: int = DEFAULT_AUTO_MIN_FACE_PX,
        overlap: float = DEFAULT_OVERLAP,
        max_tiles: int = MAX_TILES,
    ) -> TileSpec | None:
        """The smallest grid that shows a ``min_face_px`` face at about 20 px in the model
        input of a ``width`` x ``height`` frame; None when the full frame already does.
        The grid has at most ``max_tiles`` tiles (the longer axis gives way first)."""
        if width < 1 or height < 1 or min_face_px < 1:
            raise TileSpecError("frame size and face size must be positive")
        grids = []
        for size, model_side in ((width, INPUT_SIZE[0]), (height, INPUT_SIZE[1])):
            scale = model_side / size  # model pixels per frame pixel, full frame
            shown = min_face_px * scale
            if shown >= TARGET_FACE_PX:
                grids.append(1)
                continue
            # A tile of side t (with overlap o, n tiles: t = size / (n - (n - 1) * o)).
            wanted_tile = min_face_px * model_side / TARGET_FACE_PX
            n = math.ceil((size / wanted_tile - overlap) / (1 - overlap))
            grids.append(max(1, min(MAX_GRID, n)))
        rows, cols = grids[1], grids[0]
        while rows * cols > max(1, max_tiles):
            if rows >= cols:
                rows -= 1
            else:
                cols -= 1
        if rows == 1 and cols == 1:
            return None
        return cls(rows, cols, overlap)

    def resolve(self, width: int, height: int, max_tiles: int = MAX_TILES) -> TileSpec | None:
        """The concrete spec for a frame: :meth:`auto` for an automatic spec (its grid
        shrunk to at most ``max_tiles`` tiles), else self (:meth:`check` it first)."""
        if self.auto_min_face_px is None:
            return self
        return TileSpec.auto(width, height, self.auto_min_face_px, self.overlap, max_tiles)

    def check(self, max_tiles: int) -> TileSpec:
        """Self, if its grid has at most ``max_tiles`` tiles (automatic specs always pass:
        their grid is capped when resolved); else :class:`TileSpecError`."""
        if self.auto_min_face_px is None and self.rows * self.cols > max_tiles:
            raise TileSpecError(
                f"{self.rows}x{self.cols} is {self.rows * self.cols} tiles; "
                f"at most {max_tiles} allowed (max_tiles)"
            )
        return self

    def inputs(self, width: int, height: int, max_tiles: int = MAX_TILES) -> int:
        """Model inputs a ``width`` x ``height`` frame costs with this spec (tiles plus the
        full frame), without cutting anything."""
        spec = self.resolve(width, height, max_tiles)
        return 1 if spec is None else spec.windows_per_frame

    @property
    def decode_min_size(self) -> tuple[int, int] | None:
        """Smallest decoded frame size that keeps every tile at least model-input size (a
        reduced-scale JPEG decode must not go below it); None for automatic specs, whose
        grid depends on the frame (decode those at full size)."""
        if self.auto_min_face_px is not None:
            return None
        spans = (
            self.cols - (self.cols - 1) * self.overlap,
            self.rows - (self.rows - 1) * self.overlap,
        )
        return (math.ceil(INPUT_SIZE[0] * spans[0]), math.ceil(INPUT_SIZE[1] * spans[1]))

    @property
    def windows_per_frame(self) -> int:
        """Model runs per frame (full frame included); automatic specs vary per frame."""
        return self.rows * self.cols + (1 if self.include_full else 0)

    def __str__(self) -> str:
        if self.auto_min_face_px is not None:
            return f"auto:{self.auto_min_face_px}"
        return f"{self.rows}x{self.cols}:{self.overlap:g}"


@functools.lru_cache(maxsize=256)
def parse_tiles(text: str | None) -> TileSpec | None:
    """:meth:`TileSpec.parse` that also takes None (no tiling); cached, as the services look
    a camera's spec up per frame (a :class:`TileSpec` is immutable)."""
    return None if text is None else TileSpec.parse(text)


def _axis_windows(size: int, n: int, overlap: float) -> list[tuple[int, int]]:
    """``n`` intervals covering ``[0, size)``, neighbours overlapping by ``overlap``."""
    if n == 1:
        return [(0, size)]
    tile = size / (n - (n - 1) * overlap)
    step = tile * (1 - overlap)
    out = []
    for i in range(n):
        start = round(i * step)
        end = size if i == n - 1 else round(i * step + tile)
        out.append((start, max(end, start + 1)))
    return out


def tile_windows(
    width: int, height: int, spec: TileSpec | None, max_tiles: int = MAX_TILES
) -> list[Window]:
    """Pixel windows ``(x0, y0, x1, y1)`` of a frame: the full frame first (when
    ``spec.include_full`` or no spec), then the tiles row by row; a fixed grid of more
    than ``max_tiles`` tiles is a :class:`TileSpecError`, an automatic one is shrunk."""
    if width < 1 or height < 1:
        raise ValueError("frame size must be positive")
    full = (0, 0, width, height)
    if spec is None:
        return [full]
    spec = spec.check(max_tiles).resolve(width, height, max_tiles)
    if spec is None:
        return [full]
    windows = [full] if spec.include_full else []
    xs = _axis_windows(width, spec.cols, spec.overlap)
    ys = _axis_windows(height, spec.rows, spec.overlap)
    windows.extend((x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs)
    return windows


def crop(rgb: np.ndarray, window: Window, width: int, height: int) -> np.ndarray:
    """The part of ``rgb`` (possibly decoded at a reduced scale) that ``window`` (pixels of
    the ``width`` x ``height`` original) covers; a view, no copy."""
    img_h, img_w = rgb.shape[:2]
    x0, y0, x1, y1 = window
    if (img_w, img_h) == (width, height):
        return rgb[y0:y1, x0:x1]
    sx, sy = img_w / width, img_h / height
    cx0, cy0 = round(x0 * sx), round(y0 * sy)
    cx1 = max(cx0 + 1, min(img_w, round(x1 * sx)))
    cy1 = max(cy0 + 1, min(img_h, round(y1 * sy)))
    return rgb[cy0:cy1, cx0:cx1]


def _touches_inner_border(px: np.ndarray, window: Window, width: int, height: int) -> np.ndarray:
    """Boolean ``[N]``: which pixel boxes ``px [N, 4]`` (of the frame) reach a border of
    ``window`` that is not a border of the frame: the tile cut the face, another window
    sees it whole."""
    x0, y0, x1, y1 = window
    m = BORDER_MARGIN_PX
    touches = np.zeros(len(px), dtype=bool)
    if x0 > 0:
        touches |= px[:, 0] <= x0 + m
    if y0 > 0:
        touches |= px[:, 1] <= y0 + m
    if x1 < width:
        touches |= px[:, 2] >= x1 - m
    if y1 < height:
        touches |= px[:, 3] >= y1 - m
    return touches


def map_detections(
    dets_per_window: Sequence[Detections],
    windows: Sequence[Window],
    width: int,
    height: int,
    *,
    iou: float,
    class_agnostic: bool = True,
    max_detections: int | None = None,
) -> Detections:
    """Merge the detections of each window into frame-normalised detections.

    Each window's boxes (normalised to the window) are mapped to the frame; boxes of a tile
    that touch one of its inner borders (not the frame border) are dropped, as a
    neighbouring tile or the full frame sees that face whole. The union goes through greedy
    NMS (:func:`facemask.core.nms.nms`, IoU as the reference), class-agnostic like the
    reference, or per class with ``class_agnostic=False``. A full-frame window's boxes are
    passed through unchanged, so one window equals the untiled result.
    """
    if len(dets_per_window) != len(windows):
        raise ValueError("one detection list is needed per window")
    if len(windows) == 1 and windows[0] == (0, 0, width, height):
        return dets_per_window[0]
    frame = np.array([width, height, width, height], dtype=np.float64)
    mapped: list[Detections] = []
    for dets, window in zip(dets_per_window, windows, strict=True):
        if window == (0, 0, width, height):
            mapped.append(dets)
            continue
        x0, y0, x1, y1 = window
        origin = np.array([x0, y0, x0, y0], dtype=np.float64)
        extent = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=np.float64)
        px = origin + dets.xyxy * extent
        inside = ~_touches_inner_border(px, window, width, height)
        mapped.append(Detections(px[inside] / frame, dets.scores[inside], dets.class_ids[inside]))
    union = Detections.concat(mapped)
    if not len(union):
        return union
    boxes, scores = union.xyxy, union.scores
    if class_agnostic:
        keep = nms(boxes, scores, -np.inf, iou, max_detections)
    else:
        classes = union.class_ids
        parts = [
            idx[nms(boxes[idx], scores[idx], -np.inf, iou)]
            for idx in (np.flatnonzero(classes == cls) for cls in np.unique(classes))
        ]
        keep = np.concatenate(parts)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:max_detections]
    return union[keep]
