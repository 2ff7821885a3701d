"""Draw detections on an image: green boxes for ``mask``, red for ``no_mask``."""

from __future__ import annotations

import cv2
import numpy as np

from facemask.core.types import LABELS, Detections

COLOURS_RGB: dict[str, tuple[int, int, int]] = {
    "mask": (0, 255, 0),
    "no_mask": (255, 0, 0),
}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour(label: str, *, bgr: bool = False) -> tuple[int, int, int]:
    """Drawing colour of a label in RGB (or BGR) channel order."""
    r, g, b = COLOURS_RGB[label]
    return (b, g, r) if bgr else (r, g, b)


def annotate(
    image: np.ndarray,
    detections: Detections,
    *,
    bgr: bool = False,
    copy: bool = True,
) -> np.ndarray:
    """Draw each detection's box and ``label score`` on ``image`` (uint8 ``[h, w, 3]``).

    ``image`` is RGB unless ``bgr`` (OpenCV order, for ``cv2.imwrite`` / snapshots). The
    boxes are normalised, so a reduced-scale decode of the frame works as well. Returns
    the drawn image: a copy unless ``copy=False``.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [h, w, 3], got {image.dtype} {image.shape}")
    out = image.copy() if copy else image
    height, width = out.shape[:2]
    scale = max(0.4, min(width, height) / 800)
    thickness = max(2, round(2 * scale))
    boxes = detections.pixels(width, height).tolist()
    for (x1, y1, x2, y2), score, class_id in zip(
        boxes, detections.scores.tolist(), detections.class_ids.tolist(), strict=True
    ):
        label = LABELS[class_id]
        col = colour(label, bgr=bgr)
        cv2.rectangle(out, (x1, y1), (x2, y2), col, thickness)
        text = f"{label} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, _FONT, 0.6 * scale, max(1, thickness // 2))
        # Label on a filled strip above the box, or inside it at the top edge of the image.
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + baseline + 2), col, cv2.FILLED)
        cv2.putText(
            out,
            text,
            (x1 + 2, top + th + 1),
            _FONT,
            0.6 * scale,
            (0, 0, 0),
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    return out
