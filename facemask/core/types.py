"""The detection result type shared by the detector, the services and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABELS: tuple[str, str] = ("mask", "no_mask")
"""Class names by class id: 0 = mask, 1 = no_mask (the model's output order)."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected face.

    ``box_norm`` is ``(x1, y1, x2, y2)`` in image-relative coordinates exactly as decoded
    from the anchors: it is *not* clipped and may reach slightly outside ``[0, 1]``.
    """

    class_id: int
    score: float
    box_norm: tuple[float, float, float, float]

    @property
    def label(self) -> str:
        """``"mask"`` or ``"no_mask"``."""
        return LABELS[self.class_id]

    def box_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box ``(x1, y1, x2, y2)`` for an image of ``width`` x ``height``.

        As the upstream reference: each coordinate is ``int(v * W)`` (``H`` for y),
        truncated towards zero, then clipped to ``[0, W]`` / ``[0, H]``. The reference clips
        only the side that can normally leave the image (``max(0, x1)``, ``min(x2, W)``);
        clipping both sides gives the same numbers for every box that overlaps the image.
        """
        x1, y1, x2, y2 = self.box_norm
        return (
            min(max(int(x1 * width), 0), width),
            min(max(int(y1 * height), 0), height),
            min(max(int(x2 * width), 0), width),
            min(max(int(y2 * height), 0), height),
        )

    def to_json(self, width: int, height: int) -> dict[str, Any]:
        """``{"label": ..., "score": ..., "box": [x1, y1, x2, y2]}`` in pixels."""
        return {
            "label": self.label,
            "score": self.score,
            "box": list(self.box_pixels(width, height)),
        }
