"""Encoding and decoding of the SSD box regression outputs; box overlap (IoU) and a greedy
one-to-one matching of boxes by it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

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


def encode_boxes(
    boxes: np.ndarray,
    anchors: np.ndarray,
    variances: Sequence[float] = VARIANCES,
) -> np.ndarray:
    """The regression targets that :func:`decode_boxes` turns back into ``boxes``.

    ``boxes`` and ``anchors`` are ``[N, 4]`` normalised ``x1, y1, x2, y2`` (one box per
    anchor, boxes with a positive width and height); the result is float64 ``[N, 4]``
    ``dx, dy, dw, dh``: the centre offset in anchor sizes and the log size ratio, each
    divided by its variance - the exact inverse of :func:`decode_boxes`.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    anchors = np.asarray(anchors, dtype=np.float64)
    if boxes.shape[-1] != 4 or anchors.shape[-1] != 4:
        raise ValueError("boxes need 4 coordinates in the last dimension")
    anchor_cx = (anchors[..., 0] + anchors[..., 2]) / 2
    anchor_cy = (anchors[..., 1] + anchors[..., 3]) / 2
    anchor_w = anchors[..., 2] - anchors[..., 0]
    anchor_h = anchors[..., 3] - anchors[..., 1]
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if np.any(w <= 0) or np.any(h <= 0):
        raise ValueError("boxes to encode need a positive width and height")
    raw = np.stack(
        [
            (cx - anchor_cx) / anchor_w,
            (cy - anchor_cy) / anchor_h,
            np.log(w / anchor_w),
            np.log(h / anchor_h),
        ],
        axis=-1,
    )
    return raw / np.asarray(variances, dtype=np.float64)


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """IoU of every pair of ``(x1, y1, x2, y2)`` boxes (pixels or normalised):
    ``a [M, 4]`` x ``b [N, 4]`` -> float64 ``[M, N]``; disjoint or degenerate pairs have
    IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0.0, ix2 - ix1) * np.maximum(0.0, iy2 - iy1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=inter > 0)
    return out


def greedy_match(overlaps: np.ndarray, min_iou: float) -> dict[int, int]:
    """``{column: row}`` of a greedy assignment on an ``[rows, columns]`` IoU matrix.

    Pairs reaching ``min_iou`` are taken best IoU first (ties: lower row, then lower
    column), each row and each column at most once.
    """
    rows, cols = np.nonzero(overlaps >= min_iou)
    order = np.lexsort((cols, rows, -overlaps[rows, cols]))
    assigned: dict[int, int] = {}
    used_rows: set[int] = set()
    for row, col in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row in used_rows or col in assigned:
            continue
        used_rows.add(row)
        assigned[col] = row
    return assigned
