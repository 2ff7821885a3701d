"""SSD anchor boxes of the AIZOO face-mask model, for any input size.

The network is fully convolutional: its five detection heads sit on feature maps whose
sizes follow from the input size (:func:`feature_map_sizes_for`), one anchor set per cell.
At the upstream input size 260x260 the maps are 33, 17, 9, 5 and 3 cells a side and there
are :data:`NUM_ANCHORS` = 5972 anchors.

Anchor centres are spread evenly over the image, ``(i + 0.5) / f`` (the upstream
convention), whatever the input size. Where the size is not a multiple of 64 the maps
overhang the image a little (``SAME`` pools round up) and the network's cells sit a bit
off those centres; the upstream weights learned that offset at 260, so they do not carry
over to other sizes without fine-tuning (the dev-set AP50 of the upstream weights falls
from 0.420 at 260 to 0.100 at 320 and 0.018 at 384).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_INPUT_SIZE = 260
"""Side of the upstream model's square input (``facemask.core.preprocess.INPUT_SIZE``)."""
FEATURE_MAP_SIZES: tuple[int, ...] = (33, 17, 9, 5, 3)
"""Feature map sides at the upstream input size (``feature_map_sizes_for(260)``)."""
ANCHOR_SIZES: tuple[tuple[float, ...], ...] = (
    (0.04, 0.056),
    (0.08, 0.11),
    (0.16, 0.22),
    (0.32, 0.45),
    (0.64, 0.72),
)
ANCHOR_RATIOS: tuple[float, ...] = (1, 0.62, 0.42)
NUM_ANCHORS = 5972
"""Anchors of the default configuration: (33² + 17² + 9² + 5² + 3²) cells x 4."""
MIN_INPUT_SIDE = 129
"""The smallest input side the network takes: its last map needs a 3x3 map before it."""


def feature_map_sizes_for(side: int) -> tuple[int, ...]:
    """Sides of the five detection feature maps for an input ``side`` pixels long.

    The backbone halves the map with six 2x2 stride-2 ``SAME`` max pools (``ceil(n / 2)``
    each); the heads read the maps after the third, fourth, fifth and sixth pools and after
    a final 3x3 ``VALID`` convolution (``n - 2``). 260 -> (33, 17, 9, 5, 3).
    """
    if side < MIN_INPUT_SIDE:
        raise ValueError(f"input side {side} is too small; the model needs >= {MIN_INPUT_SIDE}")
    n = side
    sizes = []
    for pool in range(6):
        n = -(-n // 2)  # ceil(n / 2)
        if pool >= 2:
            sizes.append(n)
    sizes.append(n - 2)
    return tuple(sizes)


def num_anchors(input_size: tuple[int, int] = (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)) -> int:
    """Number of anchors (model outputs per image) at ``input_size`` ``(width, height)``."""
    width, height = input_size
    cells = zip(feature_map_sizes_for(width), feature_map_sizes_for(height), strict=True)
    return sum(fw * fh for fw, fh in cells) * (len(ANCHOR_SIZES[0]) + len(ANCHOR_RATIOS) - 1)


def _cell_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> list[tuple[float, float]]:
    """(width, height) of the anchors of one cell: every size at the first ratio, then
    the first size at each other ratio."""
    shapes = [(s * np.sqrt(ratios[0]), s / np.sqrt(ratios[0])) for s in sizes]
    shapes += [(sizes[0] * np.sqrt(r), sizes[0] / np.sqrt(r)) for r in ratios[1:]]
    return [(float(w), float(h)) for w, h in shapes]


def generate_anchors(
    feature_map_sizes: Sequence[int] | None = None,
    anchor_sizes: Sequence[Sequence[float]] = ANCHOR_SIZES,
    anchor_ratios: Sequence[float] = ANCHOR_RATIOS,
    *,
    input_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """All anchors as a float64 ``[N, 4]`` array of normalised ``x1, y1, x2, y2``.

    The feature maps are given as square sides (``feature_map_sizes``, default the
    upstream 260x260 maps) or follow from the model's ``input_size`` ``(width, height)``
    (:func:`feature_map_sizes_for` per axis); not both.

    Order: feature map level, then row (y), then column (x), then the anchors of a cell
    (each size at ratio ``anchor_ratios[0]``, then the first size at the other ratios).
    Centres are ``(i + 0.5) / f``; an anchor is ``w = s * sqrt(r)``, ``h = s / sqrt(r)``
    around its centre. The arithmetic follows the upstream generator operation by
    operation, so the result is bit-identical to it.
    """
    if input_size is not None:
        if feature_map_sizes is not None:
            raise ValueError("give feature_map_sizes or input_size, not both")
        widths = feature_map_sizes_for(input_size[0])
        heights = feature_map_sizes_for(input_size[1])
    else:
        widths = heights = tuple(feature_map_sizes or FEATURE_MAP_SIZES)
    if not len(anchor_sizes) == len(widths) == len(heights):
        raise ValueError("one anchor size list is needed per feature map")
    levels = []
    for fw, fh, sizes in zip(widths, heights, anchor_sizes, strict=True):
        cx, cy = np.meshgrid(
            (np.arange(fw, dtype=np.float64) + 0.5) / fw,
            (np.arange(fh, dtype=np.float64) + 0.5) / fh,
        )  # [row, col]
        half = np.array(
            [[-w / 2.0, -h / 2.0, w / 2.0, h / 2.0] for w, h in _cell_shapes(sizes, anchor_ratios)]
        )  # [A, 4]
        centre = np.stack([cx, cy, cx, cy], axis=-1)[:, :, None, :]  # [fh, fw, 1, 4]
        levels.append((centre + half).reshape(-1, 4))
    return np.concatenate(levels, axis=0)
