"""Augmentations of a training image and its faces (numpy + OpenCV, deterministic per
random generator).

The ones that matter for this data's small faces: a **zoom-out** (the frame placed smaller
on a canvas of the mean colour, so that medium faces become the small ones the model
misses), a **random crop** (a window holding at least one face centre, so faces grow and
the model sees more context variety), a **horizontal flip** and **photometric jitter**
(brightness, contrast, saturation, a colour cast). The result is the model input the
inference path makes of a frame (:func:`facemask.core.preprocess.preprocess` of the
cropped / zoomed-out picture: bilinear resize to the square input, no letterbox, RGB in
``[0, 1]``), so without augmentation it is exactly the detector's input.

Boxes are image-relative ``x1, y1, x2, y2``. A face whose centre leaves the crop is
dropped; a face smaller than :attr:`AugmentConfig.min_face_px` on the model input after
the geometric steps is dropped too (no anchor can learn it; its anchors count as
background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from facemask.core.preprocess import preprocess

MEAN_RGB = (124, 116, 104)
"""Fill colour of the zoom-out canvas (the usual ImageNet mean; any mid grey would do)."""


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Probabilities and ranges of :func:`augment` (the recipe writes them to the card)."""

    zoom_out_p: float = 0.4
    zoom_out_max: float = 2.5
    """Largest zoom-out factor (the frame's sides shrink by up to this)."""
    crop_p: float = 0.4
    crop_min_side: float = 0.35
    """Smallest crop side as a fraction of the frame's side."""
    crop_attempts: int = 20
    flip_p: float = 0.5
    brightness: float = 0.12
    """Largest brightness shift (fraction of the full range)."""
    contrast: float = 0.3
    saturation: float = 0.3
    color_cast: float = 0.06
    """Largest per-channel gain change."""
    min_face_px: float = 3.0

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)


NO_AUGMENT = AugmentConfig(
    zoom_out_p=0.0,
    crop_p=0.0,
    flip_p=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    color_cast=0.0,
)
"""Resize only (tests, and distillation frames when jitter is off)."""


def _centres_inside(boxes: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """Boolean ``[N]``: the box's centre lies strictly inside the relative ``window``."""
    x1, y1, x2, y2 = window
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside: np.ndarray = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    return inside


def _crop_window(
    boxes: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[float, float, float, float] | None:
    """A random relative window ``x1, y1, x2, y2`` holding at least one face centre (any
    window when there is no face), or None when no attempt found one."""
    for _ in range(config.crop_attempts):
        w = rng.uniform(config.crop_min_side, 1.0)
        h = float(np.clip(w * rng.uniform(0.7, 1.4), config.crop_min_side, 1.0))
        x1, y1 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
        x2, y2 = x1 + w, y1 + h
        if not len(boxes):
            return x1, y1, x2, y2
        if _centres_inside(boxes, (x1, y1, x2, y2)).any():
            return x1, y1, x2, y2
    return None


def _crop(
    rgb: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    window: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels of the relative ``window`` and the faces whose centres lie in it,
    clipped to it and relative to it."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = window
    px1, py1 = int(x1 * width), int(y1 * height)
    px2, py2 = max(px1 + 1, round(x2 * width)), max(py1 + 1, round(y2 * height))
    # the exact window the pixels cover
    x1, y1, x2, y2 = px1 / width, py1 / height, px2 / width, py2 / height
    keep = _centres_inside(boxes, (x1, y1, x2, y2))
    scale = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
    shifted = (boxes[keep] - np.array([x1, y1, x1, y1])) / scale
    return rgb[py1:py2, px1:px2], np.clip(shifted, 0.0, 1.0), labels[keep]


def photometric(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, saturation and colour-cast jitter of a float image in [0, 1]."""
    if config.brightness:
        image = image + rng.uniform(-config.brightness, config.brightness)
    if config.contrast:
        mean = image.mean()
        image = (image - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast) + mean
    if config.saturation:
        gray = image.mean(axis=2, keepdims=True)
        image = (image - gray) * rng.uniform(1 - config.saturation, 1 + config.saturation) + gray
    if config.color_cast:
        gains = rng.uniform(1 - config.color_cast, 1 + config.color_cast, size=3)
        image = image * gains.astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def augment(
    rgb: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    input_size: int,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented model input: float32 ``[input_size, input_size, 3]`` in [0, 1], its
    boxes float32 ``[M, 4]`` (relative to the input) and labels ``[M]``.

    At most one of zoom-out (``zoom_out_p``) and crop (``crop_p``) is applied, then the
    resize, the flip and the photometric jitter.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    roll = rng.uniform()
    if roll < config.zoom_out_p and config.zoom_out_max > 1.0:
        factor = rng.uniform(1.0, config.zoom_out_max)
        inner_w = max(1, round(input_size / factor))
        factor_h = float(np.clip(factor * rng.uniform(0.8, 1.25), 1.0, config.zoom_out_max))
        inner_h = max(1, round(input_size / factor_h))
        ox = int(rng.integers(0, input_size - inner_w + 1))
        oy = int(rng.integers(0, input_size - inner_h + 1))
        canvas = np.empty((input_size, input_size, 3), dtype=np.uint8)
        canvas[:] = MEAN_RGB
        canvas[oy : oy + inner_h, ox : ox + inner_w] = cv2.resize(
            rgb, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR
        )
        scale = np.array([inner_w, inner_h, inner_w, inner_h]) / input_size
        boxes = boxes * scale + np.array([ox, oy, ox, oy]) / input_size
        rgb = canvas
    elif roll < config.zoom_out_p + config.crop_p:
        window = _crop_window(boxes, rng, config)
        if window is not None:
            rgb, boxes, labels = _crop(rgb, boxes, labels, window)
    image = preprocess(rgb, (input_size, input_size))
    if rng.uniform() < config.flip_p:
        image = image[:, ::-1]
        boxes = np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
    side = (boxes[:, 2:] - boxes[:, :2]) * input_size
    keep = (side >= config.min_face_px).all(axis=1)
    image = photometric(image, rng, config)
    return (
        np.ascontiguousarray(image),
        boxes[keep].astype(np.float32).reshape(-1, 4),
        labels[keep],
    )
