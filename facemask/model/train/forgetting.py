"""The no-forgetting measure: how many of the upstream model's faces a trained model still
finds, on frames the upstream model already handles.

Both detectors run on the same frames at the same score threshold; their faces are
matched one to one, best IoU first (:func:`facemask.core.boxes.greedy_match`), at IoU >=
``iou`` (0.5). ``share`` is the matched fraction of the upstream faces (class ignored),
``same_class_share`` the fraction matched with the same label; ``trained_faces`` counts
what the trained model finds in all, so a model that keeps every upstream face by
firing everywhere is visible too. A share near 1 means the fine-tune kept the upstream
conventions on this footage; the issue's trap (tight boxes learned, loose ones lost)
shows as a low share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facemask.core.boxes import greedy_match, iou_matrix
from facemask.model.detector import Detector

DEFAULT_CONF = 0.5
DEFAULT_IOU = 0.5


def no_forgetting(
    reference: Detector,
    trained: Detector,
    frames: Sequence[np.ndarray],
    *,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
) -> dict[str, Any]:
    """The measure (see the module docstring) on RGB uint8 ``frames``."""
    before = reference.detect(frames, conf=conf)
    after = trained.detect(frames, conf=conf)
    upstream = found = same_class = 0
    for old, new in zip(before, after, strict=True):
        upstream += len(old)
        if not len(old) or not len(new):
            continue
        pairs = greedy_match(iou_matrix(old.xyxy, new.xyxy), iou)  # {new: old}
        found += len(pairs)
        same_class += sum(int(old.class_ids[o] == new.class_ids[n]) for n, o in pairs.items())
    return {
        "frames": len(frames),
        "conf": conf,
        "iou": iou,
        "upstream_faces": upstream,
        "trained_faces": int(sum(len(d) for d in after)),
        "found": found,
        "share": found / upstream if upstream else None,
        "same_class_share": same_class / upstream if upstream else None,
    }
