"""Anchor matching: the training targets of one image (numpy).

Each anchor gets the face it overlaps most. An anchor is *positive* when that IoU is at
least :data:`POSITIVE_IOU` (0.4), and every face makes its best anchor positive whatever
the IoU (so a face between anchor sizes is still learned); an anchor below
:data:`NEGATIVE_IOU` (0.3) with every face is *background*; the anchors in between are
ignored by the loss. A positive anchor's box target is the upstream encoding of its face
(:func:`facemask.core.boxes.encode_boxes`, the exact inverse of the decoding the
detector runs, with its variances 0.1 / 0.2).
"""

from __future__ import annotations

import numpy as np

from facemask.core.boxes import encode_boxes, iou_matrix

POSITIVE_IOU = 0.4
NEGATIVE_IOU = 0.3
IGNORE = -1
"""Class target of an anchor the loss leaves out; 0 is background, 1 + class id a face."""


def match_anchors(
    anchors: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of one image: ``loc`` float32 ``[A, 4]`` (zero where not positive) and
    ``cls`` int32 ``[A]`` (:data:`IGNORE`, 0 background, ``1 + label`` for a face).

    ``anchors`` ``[A, 4]`` and ``boxes`` ``[G, 4]`` are relative ``x1, y1, x2, y2``;
    ``labels`` ``[G]`` are class ids (0 mask, 1 no_mask). No face: every anchor is
    background.
    """
    count = len(anchors)
    loc = np.zeros((count, 4), dtype=np.float32)
    cls = np.zeros(count, dtype=np.int32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(boxes):
        return loc, cls
    overlaps = iou_matrix(anchors, boxes)  # [A, G]
    best_face = overlaps.argmax(axis=1)
    best_iou = overlaps[np.arange(count), best_face]
    best_anchor = overlaps.argmax(axis=0)  # [G]
    for face, anchor in enumerate(best_anchor.tolist()):
        if overlaps[anchor, face] > 0:
            best_face[anchor] = face
            best_iou[anchor] = 1.0
    positive = best_iou >= positive_iou
    cls[best_iou < positive_iou] = IGNORE
    cls[best_iou < negative_iou] = 0
    cls[positive] = labels[best_face[positive]] + 1
    loc[positive] = encode_boxes(boxes[best_face[positive]], anchors[positive])
    return loc, cls
