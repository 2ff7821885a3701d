"""The one detection type of the project: :class:`Detections`, columns of arrays.

A frame's faces travel as one :class:`Detections` from the model's post-processing
through tiling, the detector, the inference batcher and server, the stream wire format
and the gRPC mapping to the alert service's tracker, rules and snapshots. Boxes are kept
in the model's own convention, image-relative ``(x1, y1, x2, y2)``, so a picture decoded
at a reduced scale is drawn on with the same numbers; pixels are derived on demand with
the upstream reference's rounding (:meth:`Detections.pixels`).

Shape contract (``N`` faces, ``N >= 0``)::

    xyxy       float64 [N, 4]   image-relative corners, not clipped (may leave [0, 1])
    scores     float64 [N]      the winning class's sigmoid score, in [0, 1]
    class_ids  int64   [N]      index into LABELS: 0 = mask, 1 = no_mask
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

LABELS: tuple[str, str] = ("mask", "no_mask")
"""Class names by class id: 0 = mask, 1 = no_mask (the model's output order)."""

LABEL_IDS: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
"""Class id by class name."""

PIXEL_NUDGE = 1e-6
"""Pixels added before normalising an integer pixel box (:meth:`Detections.from_pixels`),
so that :meth:`Detections.pixels` gives the very same integers back: ``x / w * w`` can
land a rounding error below ``x`` (``1 / 49 * 49 < 1``) and truncation would lose a
pixel. A millionth of a pixel changes no IoU, size or drawing."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Index = int | slice | npt.NDArray[np.integer] | npt.NDArray[np.bool_] | Sequence[int]


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """The faces found in one image (see the module docstring for the shape contract).

    Immutable: every method returns new arrays. ``len()`` is the number of faces;
    indexing with an int, a slice, an index array or a boolean mask gives a
    :class:`Detections` of those rows; iterating gives one-row :class:`Detections`.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if not len(xyxy) == len(scores) == len(class_ids):
            raise ValueError(
                f"Detections columns differ in length: xyxy {len(xyxy)}, "
                f"scores {len(scores)}, class_ids {len(class_ids)}"
            )
        if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= len(LABELS)):
            raise ValueError(f"class ids must be in 0..{len(LABELS) - 1}")
        for array in (xyxy, scores, class_ids):
            array.flags.writeable = False
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def empty(cls) -> Detections:
        """No faces."""
        return cls(np.empty((0, 4)), np.empty(0), np.empty(0, dtype=np.int64))

    @classmethod
    def from_pixels(
        cls,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike,
        class_ids: npt.ArrayLike,
        width: int,
        height: int,
    ) -> Detections:
        """From integer pixel boxes ``[N, 4]`` of a ``width`` x ``height`` image.

        ``pixels(width, height)`` of the result returns exactly ``boxes`` (clipped to the
        image), see :data:`PIXEL_NUDGE`.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        px = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([width, height, width, height], dtype=np.float64)
        return cls((px + PIXEL_NUDGE) / scale, np.asarray(scores), np.asarray(class_ids))

    @classmethod
    def from_labels(
        cls, xyxy: npt.ArrayLike, scores: npt.ArrayLike, labels: Sequence[str]
    ) -> Detections:
        """From label names instead of class ids (``ValueError`` on an unknown label)."""
        try:
            ids = [LABEL_IDS[label] for label in labels]
        except KeyError as exc:
            raise ValueError(f"unknown label {exc.args[0]!r}; labels are {LABELS}") from None
        return cls(np.asarray(xyxy, dtype=np.float64), np.asarray(scores), np.asarray(ids))

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """All rows of ``parts``, in order."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
        )

    # -- rows ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Index) -> Detections:
        if isinstance(index, int | np.integer):
            index = slice(int(index), int(index) + 1 or None)
        elif not isinstance(index, slice):
            index = np.asarray(index)
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index])

    def __iter__(self) -> Iterator[Detections]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.class_ids, other.class_ids)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: not hashable

    def __repr__(self) -> str:
        rows = ", ".join(
            f"{LABELS[c]} {s:.3f} {tuple(round(float(v), 4) for v in b)}"
            for b, s, c in zip(self.xyxy, self.scores, self.class_ids, strict=True)
        )
        return f"Detections({len(self)}: {rows})"

    # -- views -----------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """The label name of each row."""
        return [LABELS[c] for c in self.class_ids.tolist()]

    def pixels(self, width: int, height: int) -> IntArray:
        """Integer pixel boxes ``[N, 4]`` for an image of ``width`` x ``height``.

        As the upstream reference: each coordinate is ``int(v * W)`` (``H`` for y),
        truncated towards zero, then clipped to ``[0, W]`` / ``[0, H]``. The reference clips
        only the side that can normally leave the image (``max(0, x1)``, ``min(x2, W)``);
        clipping both sides gives the same numbers for every box that overlaps the image.
        """
        scale = np.array([width, height, width, height], dtype=np.float64)
        px = np.trunc(self.xyxy * scale).astype(np.int64)
        return np.clip(px, 0, scale.astype(np.int64))

    def index_of(self, boxes: npt.ArrayLike, width: int, height: int) -> IntArray:
        """For each integer pixel box ``[K, 4]`` of a ``width`` x ``height`` image, the
        first row whose :meth:`pixels` are that box; -1 where no row has it.

        Pixel boxes are exact (:data:`PIXEL_NUDGE`), so a box read from the frame's faces
        (a tracked face, an alert's ``box``) finds its row again by equality.
        """
        wanted = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        if not len(self):
            return np.full(len(wanted), -1, dtype=np.int64)
        same = (wanted[:, None, :] == self.pixels(width, height)[None, :, :]).all(axis=2)
        found: IntArray = np.where(same.any(axis=1), same.argmax(axis=1), -1)
        return found

    def pixels_float(self, width: int, height: int) -> FloatArray:
        """Unrounded pixel boxes ``[N, 4]`` (``v * W``), clipped to the image."""
        scale = np.array([width, height, width, height], dtype=np.float64)
        return np.clip(self.xyxy * scale, 0.0, scale)

    def min_sides(self, width: int, height: int) -> IntArray:
        """The smaller side of each integer pixel box ``[N]``."""
        px = self.pixels(width, height)
        return np.minimum(px[:, 2] - px[:, 0], px[:, 3] - px[:, 1])

    def to_json(
        self, width: int, height: int, *, digits: int | None = None
    ) -> list[dict[str, Any]]:
        """``[{"label": ..., "score": ..., "box": [x1, y1, x2, y2]}]`` in integer pixels.

        ``digits`` rounds the scores (the stream wire format keeps 6).
        """
        px = self.pixels(width, height).tolist()
        scores = self.scores.tolist()
        return [
            {
                "label": LABELS[c],
                "score": score if digits is None else round(score, digits),
                "box": box,
            }
            for c, score, box in zip(self.class_ids.tolist(), scores, px, strict=True)
        ]
