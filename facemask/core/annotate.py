"""Draw detections on an image: green boxes for ``mask``, red for ``no_mask``, each with a
``label score`` strip ("no_mask 0.93"); chosen rows (an alert's violators) in their own
colour (:data:`HIGHLIGHT_RGB`) on top of the others; and crops of chosen boxes in a panel
beside the image (:func:`crops_beside`), so a small picture still shows whose face it is.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from facemask.core.types import LABELS, Detections

COLOURS_RGB: dict[str, tuple[int, int, int]] = {
    "mask": (0, 255, 0),
    "no_mask": (255, 0, 0),
}
HIGHLIGHT_RGB: tuple[int, int, int] = (255, 191, 0)
"""Amber: the rows :func:`annotate` highlights (an alert's violators) and the borders of
their crops; distinct from both label colours, and black text stays readable on it."""
MUTED_RGB: tuple[int, int, int] = (160, 160, 160)
"""Grey: the rows :func:`annotate` mutes (faces a camera's ignore mask drops)."""
PANEL_RGB: tuple[int, int, int] = (24, 24, 24)
"""Background of the crop panel."""
MIN_FONT_SCALE = 0.35
"""Smallest label font (about 8 px high): labels stay legible on a 320 px thumbnail."""
_FONT = cv2.FONT_HERSHEY_SIMPLEX

Rows = npt.ArrayLike
"""Row indices (``[K]`` ints) or a boolean mask (``[N]``) of a :class:`Detections`."""


def colour(label: str, *, bgr: bool = False) -> tuple[int, int, int]:
    """Drawing colour of a label in RGB (or BGR) channel order."""
    return _order(COLOURS_RGB[label], bgr)


def _order(rgb: tuple[int, int, int], bgr: bool) -> tuple[int, int, int]:
    r, g, b = rgb
    return (b, g, r) if bgr else (r, g, b)


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [h, w, 3], got {image.dtype} {image.shape}")


def _mask(rows: Rows | None, count: int, default: bool) -> np.ndarray:
    """Boolean ``[count]`` of ``rows`` (indices or a mask); all ``default`` for None."""
    if rows is None:
        return np.full(count, default)
    array = np.asarray(rows)
    if array.dtype == np.bool_:
        if array.shape != (count,):
            raise ValueError(f"a row mask needs {count} entries, got shape {array.shape}")
        return array
    out = np.zeros(count, dtype=bool)
    out[array.astype(np.int64).reshape(-1)] = True  # IndexError for a row that is not there
    return out


def annotate(
    image: np.ndarray,
    detections: Detections,
    *,
    bgr: bool = False,
    copy: bool = True,
    highlight: Rows | None = None,
    labelled: Rows | None = None,
    muted: Rows | None = None,
) -> np.ndarray:
    """Draw each detection's box and ``label score`` on ``image`` (uint8 ``[h, w, 3]``).

    ``image`` is RGB unless ``bgr`` (OpenCV order, for ``cv2.imwrite`` / snapshots). The
    boxes are normalised, so a reduced-scale decode of the frame works as well.
    ``highlight`` rows (indices or a boolean mask) are drawn last, thicker and in
    :data:`HIGHLIGHT_RGB`; ``labelled`` rows get the label strip (None: every row; a
    thumbnail labels only its highlighted rows). ``muted`` rows (faces the alert rule
    ignores: inside an ignore mask) are drawn first, thin and in :data:`MUTED_RGB`, with
    ``ignored`` in their label. Returns the drawn image: a copy unless ``copy=False``.
    """
    _check(image)
    out = image.copy() if copy else image
    height, width = out.shape[:2]
    count = len(detections)
    if not count:
        return out
    scale = max(0.4, min(width, height) / 800)
    font = max(MIN_FONT_SCALE, 0.6 * scale)
    thickness = max(2, round(2 * scale))
    text_thickness = max(1, thickness // 2)
    high = _mask(highlight, count, False)
    label = _mask(labelled, count, True)
    mute = _mask(muted, count, False) & ~high
    boxes = detections.pixels(width, height)
    # muted rows first (underneath), highlighted rows last (on top)
    order = np.argsort(high.astype(np.int8) - mute.astype(np.int8), kind="stable")
    for i, (x1, y1, x2, y2), score, class_id in zip(
        order.tolist(),
        boxes[order].tolist(),
        detections.scores[order].tolist(),
        detections.class_ids[order].tolist(),
        strict=True,
    ):
        name = LABELS[class_id]
        if high[i]:
            col, line = _order(HIGHLIGHT_RGB, bgr), thickness + 1
        elif mute[i]:
            col, line = _order(MUTED_RGB, bgr), max(1, thickness - 1)
        else:
            col, line = colour(name, bgr=bgr), thickness
        cv2.rectangle(out, (x1, y1), (x2, y2), col, line)
        if not label[i]:
            continue
        text = f"{name} {score:.2f}" + (" ignored" if mute[i] else "")
        (tw, th), baseline = cv2.getTextSize(text, _FONT, font, text_thickness)
        # Label on a filled strip above the box, or inside it at the top edge of the image.
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + baseline + 2), col, cv2.FILLED)
        cv2.putText(
            out, text, (x1 + 2, top + th + 1), _FONT, font, (0, 0, 0), text_thickness, cv2.LINE_AA
        )
    return out


def crops_beside(
    image: np.ndarray,
    source: np.ndarray,
    boxes: npt.ArrayLike,
    *,
    share: float = 1 / 3,
    margin: float = 0.25,
    max_crops: int = 4,
    border: tuple[int, int, int] = HIGHLIGHT_RGB,
    bgr: bool = False,
) -> np.ndarray:
    """``image`` with a panel on its right holding crops of ``boxes`` taken from ``source``.

    ``source`` is the picture to crop from, the size of ``image`` (typically the same frame
    without boxes drawn, so nothing covers the face); ``boxes`` are integer pixel boxes
    ``[K, 4]`` ``(x1, y1, x2, y2)`` of that size. Each box is widened by ``margin`` of its
    size on every side (clipped to the picture), scaled to fit its cell keeping its aspect
    (up or down) and framed in ``border`` (RGB, or BGR with ``bgr``). The panel is
    ``share`` of the image's width; the first ``max_crops`` boxes are stacked in it, top to
    bottom. Without boxes the image is returned as it is (no panel).
    """
    _check(image)
    if source.shape != image.shape:
        raise ValueError(f"source {source.shape} and image {image.shape} differ in size")
    height, width = image.shape[:2]
    rects = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:max_crops]
    if not len(rects):
        return image
    panel_w = max(1, round(width * share))
    panel = np.empty((height, panel_w, 3), np.uint8)
    panel[:] = _order(PANEL_RGB, bgr)
    # Crop rectangles of every box at once: widened, clipped, at least one pixel.
    size = rects[:, 2:] - rects[:, :2]
    grown = np.concatenate([rects[:, :2] - margin * size, rects[:, 2:] + margin * size], axis=1)
    limits = np.array([width, height, width, height], dtype=np.float64)
    grown = np.clip(np.rint(grown), 0, limits).astype(np.int64)
    grown[:, 2:] = np.maximum(grown[:, 2:], np.minimum(grown[:, :2] + 1, limits[:2]))
    grown[:, :2] = np.minimum(grown[:, :2], grown[:, 2:] - 1)
    cell_h = height // len(rects)
    pad = max(1, round(min(panel_w, cell_h) * 0.04))
    line = max(1, round(min(panel_w, cell_h) / 60))
    colour_ = _order(border, bgr)
    for k, (x1, y1, x2, y2) in enumerate(grown.tolist()):
        room_w, room_h = panel_w - 2 * pad, cell_h - 2 * pad
        if room_w < 1 or room_h < 1:
            break
        piece = source[y1:y2, x1:x2]
        fit = min(room_w / piece.shape[1], room_h / piece.shape[0])
        w = max(1, min(room_w, math.floor(piece.shape[1] * fit)))
        h = max(1, min(room_h, math.floor(piece.shape[0] * fit)))
        interp = cv2.INTER_AREA if fit < 1 else cv2.INTER_LINEAR
        top = k * cell_h + pad + (room_h - h) // 2
        left = pad + (room_w - w) // 2
        panel[top : top + h, left : left + w] = cv2.resize(piece, (w, h), interpolation=interp)
        cv2.rectangle(panel, (left, top), (left + w - 1, top + h - 1), colour_, line)
    return np.concatenate([image, panel], axis=1)
