"""SSD anchor boxes of the AIZOO face-mask model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FEATURE_MAP_SIZES: tuple[int, ...] = (33, 17, 9, 5, 3)
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


def _cell_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> list[tuple[float, float]]:
    """(width, height) of the anchors of one cell: every size at the first ratio, then
    the first size at each other ratio."""
    shapes = [(s * np.sqrt(ratios[0]), s / np.sqrt(ratios[0])) for s in sizes]
    shapes += [(sizes[0] * np.sqrt(r), sizes[0] / np.sqrt(r)) for r in ratios[1:]]
    return [(float(w), float(h)) for w, h in shapes]


def generate_anchors(
    feature_map_sizes: Sequence[int] = FEATURE_MAP_SIZES,
    anchor_sizes: Sequence[Sequence[float]] = ANCHOR_SIZES,
    anchor_ratios: Sequence[float] = ANCHOR_RATIOS,
) -> np.ndarray:
    """All anchors as a float64 ``[N, 4]`` array of normalised ``x1, y1, x2, y2``.

    Order: feature map level, then row (y), then column (x), then the anchors of a cell
    (each size at ratio ``anchor_ratios[0]``, then the first size at the other ratios).
    Centres are ``(i + 0.5) / f``; an anchor is ``w = s * sqrt(r)``, ``h = s / sqrt(r)``
    around its centre. The arithmetic follows the upstream generator operation by
    operation, so the result is bit-identical to it.
    """
    if len(anchor_sizes) != len(feature_map_sizes):
        raise ValueError("one anchor size list is needed per feature map")
    levels = []
    for f, sizes in zip(feature_map_sizes, anchor_sizes, strict=True):
        centres = (np.arange(f, dtype=np.float64) + 0.5) / f
        cx, cy = np.meshgrid(centres, centres)  # [row, col]
        half = np.array(
            [[-w / 2.0, -h / 2.0, w / 2.0, h / 2.0] for w, h in _cell_shapes(sizes, anchor_ratios)]
        )  # [A, 4]
        centre = np.stack([cx, cy, cx, cy], axis=-1)[:, :, None, :]  # [f, f, 1, 4]
        levels.append((centre + half).reshape(-1, 4))
    return np.concatenate(levels, axis=0)
