"""The stored alert: one typed record from the database to every sink and the API.

The consumer builds an :class:`AlertRecord` for each alert the engine decides, the store
keeps it (one row of ``alerts``), and the outbox hands the same record - read back from
that row - to each sink: the JSON sinks send :meth:`AlertRecord.to_json`, the Redis sink
:meth:`AlertRecord.to_event` (the wire format of :class:`facemask.contracts.wire.AlertEvent`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from facemask.contracts.wire import AlertEvent
from facemask.core.types import Detections

# --- review (issue 14) ---

ReviewState = Literal["new", "acknowledged", "confirmed", "false_positive"]
ReviewLabel = Literal["mask", "no_mask", "none"]
REVIEW_STATES: tuple[ReviewState, ...] = ("new", "acknowledged", "confirmed", "false_positive")
REVIEWED: tuple[ReviewState, ...] = ("confirmed", "false_positive")
"""The states a person decided the alert's truth in (``?state=reviewed``, the export)."""
REVIEW_LABELS: dict[ReviewState, tuple[ReviewLabel, ...]] = {
    "new": (),
    "acknowledged": (),
    "confirmed": ("no_mask",),
    "false_positive": ("mask", "none"),
}
"""The labels of the violator's face a state allows, the default first (none: no label).

A confirmed alert's face is ``no_mask``; a false positive's is ``mask`` (the person wore
one) or ``none`` (no person's face at all: a poster, a reflection)."""


@dataclass(frozen=True, slots=True)
class Review:
    """What a person said about an alert: its state, who and when (server clock), a note,
    and for a decided alert the true label of the violator's face."""

    state: ReviewState = "new"
    by: str | None = None
    at: float | None = None
    note: str = ""
    label: ReviewLabel | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``review`` object of the alert JSON."""
        return {
            "state": self.state,
            "by": self.by,
            "at": self.at,
            "note": self.note,
            "label": self.label,
        }


# --- end review ---


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored alert (``seq`` is 0 until it is stored)."""

    alert_id: str
    camera_id: str
    ts: float
    created: float
    kind: str
    frame_id: int
    frame_sid: str
    stream: str
    track_id: int
    score: float
    box: tuple[int, int, int, int]
    width: int
    height: int
    detections: Detections
    """Every face of the alert's frame (``width`` x ``height``)."""
    camera_name: str = ""
    place: str = ""
    message: str = ""
    snapshot: str | None = None
    thumbnail: str | None = None
    rule: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    # --- review (issue 14) ---
    frame: str | None = None
    """The clean frame (the frame stream's bytes, as captured), relative to the snapshot
    directory; None when it was not kept."""
    review: Review = field(default_factory=Review)
    # --- end review ---
    # --- grouping (engine) ---
    violators: int = 1
    """People this alert names (more than 1: violators merged by the grouping window)."""
    track_ids: tuple[int, ...] = ()
    """Their track ids (empty in alerts stored before grouping: ``track_id`` alone)."""

    @property
    def has_snapshot(self) -> bool:
        """Whether the alert's annotated frame was saved."""
        return self.snapshot is not None

    @property
    def public_score(self) -> float:
        """The score as the API, the sinks and the alerts stream show it (4 decimals)."""
        return round(self.score, 4)

    def to_json(self) -> dict[str, Any]:
        """The alert as the API and the sinks show it (no file paths)."""
        return {
            "id": self.alert_id,
            "seq": self.seq,
            "camera_id": self.camera_id,
            "camera_name": self.camera_name or self.camera_id,
            "place": self.place,
            "ts": self.ts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.ts))
            + f".{int((self.ts % 1) * 1000):03d}Z",
            "kind": self.kind,
            "message": self.message,
            "frame_id": self.frame_id,
            "frame_sid": self.frame_sid,
            "track_id": self.track_id,
            "score": self.public_score,
            "box": list(self.box),
            "width": self.width,
            "height": self.height,
            "detections": self.detections.to_json(self.width, self.height, digits=6),
            "has_snapshot": self.has_snapshot,
            "rule": self.rule,
            "violators": self.violators,
            "track_ids": list(self.track_ids or (self.track_id,)),
        }

    def to_event(self) -> AlertEvent:
        """The alert on the alerts stream (the voice prompt's and integrations' input)."""
        return AlertEvent(
            alert_id=self.alert_id,
            camera_id=self.camera_id,
            ts=self.ts,
            frame_id=self.frame_id,
            kind=self.kind,
            score=self.public_score,
            track_id=self.track_id,
            message=self.message,
        )
