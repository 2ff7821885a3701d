"""The stored alert: one typed record from the database to every sink and the API.

The consumer builds an :class:`AlertRecord` for each alert the engine decides, the store
keeps it (one row of ``alerts``), and the outbox hands the same record - read back from
that row - to each sink: the JSON sinks send :meth:`AlertRecord.to_json`, the Redis sink
:meth:`AlertRecord.to_event` (the wire format of :class:`facemask.contracts.wire.AlertEvent`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from facemask.contracts.wire import AlertEvent
from facemask.core.types import Detections


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
