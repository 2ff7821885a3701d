"""Decoding of the SSD box regression outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VARIANCES: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)


def decode_boxes(
    raw_loc: np.ndarray,
    anchors: np.ndarray,
    variances: Sequence[float] = VARIANCES,
) -> np.ndarray:
    """Turn raw regression outputs into normalised ``x1, y1, x2, y2`` boxes (float64).

    ``raw_loc`` is ``[N, 4]`` or ``[B, N, 4]`` (``dx, dy, dw, dh`` per anchor); ``anchors``
    is ``[N, 4]`` in ``x1, y1, x2, y2``. The outputs are scaled by ``variances``; the centre
    moves by ``dx * anchor_w`` / ``dy * anchor_h`` and the size is ``exp(dw) * anchor_w`` /
    ``exp(dh) * anchor_h``. Same operations, in the same order and precision, as upstream.
    """
    if raw_loc.shape[-1] != 4 or anchors.shape[-1] != 4:
        raise ValueError("boxes need 4 coordinates in the last dimension")
    anchor_cx = (anchors[..., 0] + anchors[..., 2]) / 2
    anchor_cy = (anchors[..., 1] + anchors[..., 3]) / 2
    anchor_w = anchors[..., 2] - anchors[..., 0]
    anchor_h = anchors[..., 3] - anchors[..., 1]
    scaled = raw_loc * np.asarray(variances, dtype=np.float64)
    cx = scaled[..., 0] * anchor_w + anchor_cx
    cy = scaled[..., 1] * anchor_h + anchor_cy
    w = np.exp(scaled[..., 2]) * anchor_w
    h = np.exp(scaled[..., 3]) * anchor_h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
