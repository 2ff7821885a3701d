"""Mapping between :class:`~facemask.core.types.Detections` and the gRPC messages of
``facemask.v1`` (generated code in :mod:`facemask.v1`), both ways.

A message carries a face twice: the integer pixel box (the reference's rounding) and the
unclipped normalised box as doubles, from which :meth:`Detections.pixels` recomputes the
very same pixel box. Labels map ``0 -> LABEL_MASK``, ``1 -> LABEL_NO_MASK``.
"""

from __future__ import annotations

import numpy as np

from facemask.core.types import LABELS, Detections
from facemask.v1 import detector_pb2

PROTO_LABELS: tuple[int, ...] = (detector_pb2.LABEL_MASK, detector_pb2.LABEL_NO_MASK)
"""The ``facemask.v1.Label`` of each class id."""


def detections_to_proto(
    detections: Detections, width: int, height: int
) -> list[detector_pb2.Detection]:
    """The messages of the faces of a ``width`` x ``height`` image."""
    pixels = detections.pixels(width, height).tolist()
    return [
        detector_pb2.Detection(
            label=PROTO_LABELS[class_id],
            label_name=LABELS[class_id],
            score=score,
            box=detector_pb2.PixelBox(x1=px[0], y1=px[1], x2=px[2], y2=px[3]),
            box_normalized=detector_pb2.NormalizedBox(x1=nb[0], y1=nb[1], x2=nb[2], y2=nb[3]),
        )
        for class_id, score, px, nb in zip(
            detections.class_ids.tolist(),
            detections.scores.tolist(),
            pixels,
            detections.xyxy.tolist(),
            strict=True,
        )
    ]


def detections_from_proto(messages: list[detector_pb2.Detection]) -> Detections:
    """The faces of the messages (``ValueError`` on an unknown label)."""
    if not messages:
        return Detections.empty()
    try:
        class_ids = [PROTO_LABELS.index(m.label) for m in messages]
    except ValueError:
        raise ValueError("a detection message has no known label") from None
    xyxy = np.array(
        [
            (m.box_normalized.x1, m.box_normalized.y1, m.box_normalized.x2, m.box_normalized.y2)
            for m in messages
        ],
        dtype=np.float64,
    )
    scores = np.array([m.score for m in messages], dtype=np.float64)
    return Detections(xyxy, scores, np.array(class_ids, dtype=np.int64))
