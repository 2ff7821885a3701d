"""A small IoU tracker: associates the faces of one camera across frames.

Greedy association in two rounds, each over one vectorised ``[tracks, faces]`` IoU matrix
(of integer pixel boxes): every (track, face) pair whose IoU reaches ``min_iou`` is a
candidate; candidates are taken best IoU first, each track and each face at most once.

1. the tracks seen in the previous frame take their faces;
2. the faces left over are matched the same way against the *lost* tracks (not seen in
   the previous frame, but seen within the last ``reentry`` seconds) by their last box:
   a face that reappears where a lost track was resumes it, so a detector dropout or a
   short occlusion does not make a second person (nor a second alert).

Faces still unmatched start new tracks. A track unseen for more than ``reentry`` seconds
ends: a person who comes back later is a new track. Time, not a frame count, so the rule
is the same at any frame rate. The label is not used for association: a face whose label
flickers between ``mask`` and ``no_mask`` stays one track, which is what the K-of-N rule
needs.

The tracker is pure (no clock, no I/O): time comes from the frames' capture timestamps,
so replaying the same entries gives the same tracks. A track's recent faces are a
:class:`~facemask.core.types.Detections` of its frame size. The whole state serialises to
a small JSON-ready dict (each face ``[label, score, x1, y1, x2, y2]`` in pixels;
:meth:`IouTracker.to_dict` / :meth:`IouTracker.from_dict`), which the alert service
stores with every batch it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facemask.core.boxes import greedy_match, iou_matrix
from facemask.core.types import LABEL_IDS, LABELS, Detections

Box = tuple[int, int, int, int]
HISTORY_CAP = 1000


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` pixel boxes (0 when disjoint)."""
    return float(iou_matrix([a], [b])[0, 0])


@dataclass(slots=True)
class Track:
    """One face followed across frames; ``history`` holds its last faces (oldest first)
    in a ``size`` (width, height) frame."""

    track_id: int
    box: Box
    first_ts: float
    last_ts: float
    size: tuple[int, int]
    history: Detections = field(default_factory=Detections.empty)
    history_len: int = HISTORY_CAP
    missed: int = 0  # frames since it was last seen (0: seen in the latest frame)
    hits: int = 0
    alerted: bool = False
    last_alert_ts: float | None = None  # capture time of its last alert (its cooldown)

    @property
    def last(self) -> Detections:
        """The latest face (one row)."""
        return self.history[-1:]

    def observe(self, face: Detections, box: Box, size: tuple[int, int], ts: float) -> None:
        """Record a matched face (one row) with its pixel box in a ``size`` frame."""
        if size != self.size and len(self.history):
            # The camera changed resolution: keep the history's pixels in the new frame.
            old_w, old_h = self.size
            self.history = Detections.from_pixels(
                self.history.pixels(old_w, old_h),
                self.history.scores,
                self.history.class_ids,
                *size,
            )
        self.size = size
        self.history = Detections.concat([self.history, face])[-self.history_len :]
        self.box = box
        self.last_ts = ts
        self.missed = 0
        self.hits += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        pixels = self.history.pixels(*self.size).tolist()
        return {
            "id": self.track_id,
            "box": list(self.box),
            "size": list(self.size),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "missed": self.missed,
            "hits": self.hits,
            "alerted": self.alerted,
            "last_alert_ts": self.last_alert_ts,
            "history": [
                [LABELS[c], round(s, 4), *px]
                for c, s, px in zip(
                    self.history.class_ids.tolist(),
                    self.history.scores.tolist(),
                    pixels,
                    strict=True,
                )
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], history_len: int) -> Track:
        """Inverse of :meth:`to_dict` (also reads states stored before ``size`` or
        ``last_alert_ts`` existed)."""
        x1, y1, x2, y2 = raw["box"]
        rows: Sequence[Sequence[Any]] = raw["history"][-history_len:] if history_len else []
        boxes = [[int(v) for v in row[2:6]] for row in rows]
        if "size" in raw:
            width, height = (int(v) for v in raw["size"])
        else:  # any frame that holds every box keeps the pixels exact
            width = max([int(x2), 1, *(b[2] for b in boxes)])
            height = max([int(y2), 1, *(b[3] for b in boxes)])
        history = (
            Detections.from_pixels(
                boxes,
                [float(row[1]) for row in rows],
                [LABEL_IDS[str(row[0])] for row in rows],
                width,
                height,
            )
            if rows
            else Detections.empty()
        )
        return cls(
            track_id=int(raw["id"]),
            box=(int(x1), int(y1), int(x2), int(y2)),
            first_ts=float(raw["first_ts"]),
            last_ts=float(raw["last_ts"]),
            size=(width, height),
            history=history,
            history_len=history_len,
            missed=int(raw["missed"]),
            hits=int(raw["hits"]),
            alerted=bool(raw["alerted"]),
            last_alert_ts=None if raw.get("last_alert_ts") is None else float(raw["last_alert_ts"]),
        )


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Association parameters (see the module docstring)."""

    min_iou: float = 0.3
    reentry: float = 5.0  # seconds a lost track may be resumed; later: a new track
    history: int = 8  # observations kept per track (>= the rules' N)


class IouTracker:
    """Greedy IoU tracker of one camera (see the module docstring)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, faces: Detections, width: int, height: int, ts: float) -> list[Track]:
        """Associate one ``width`` x ``height`` frame's faces; returns each face's track."""
        # End tracks away too long before matching, so a new person standing where
        # someone stood minutes ago does not inherit their history.
        self.tracks = [t for t in self.tracks if ts - t.last_ts <= self.config.reentry]
        boxes = faces.pixels(width, height)
        by_face: dict[int, Track] = {}
        for lost in (False, True):  # seen in the previous frame first, then lost ones
            candidates = [t for t in self.tracks if (t.missed > 0) == lost]
            free = [i for i in range(len(boxes)) if i not in by_face]
            if not candidates or not free:
                continue
            track_boxes = np.array([t.box for t in candidates], dtype=np.int64).reshape(-1, 4)
            assigned = greedy_match(iou_matrix(track_boxes, boxes[free]), self.config.min_iou)
            for col, row in assigned.items():
                by_face[free[col]] = candidates[row]
        matched = {id(t) for t in by_face.values()}
        for track in self.tracks:
            if id(track) not in matched:
                track.missed += 1
        out: list[Track] = []
        for i, box in enumerate(boxes.tolist()):
            pixel_box: Box = (box[0], box[1], box[2], box[3])
            found = by_face.get(i)
            if found is None:
                track = Track(
                    track_id=self.next_id,
                    box=pixel_box,
                    first_ts=ts,
                    last_ts=ts,
                    size=(width, height),
                    history_len=self.config.history,
                )
                self.next_id += 1
                self.tracks.append(track)
            else:
                track = found
            track.observe(faces[i], pixel_box, (width, height), ts)
            out.append(track)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (tracks and the next track id)."""
        return {"next_id": self.next_id, "tracks": [t.to_dict() for t in self.tracks]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], config: TrackerConfig | None = None) -> IouTracker:
        """Inverse of :meth:`to_dict`."""
        tracker = cls(config)
        tracker.next_id = int(raw.get("next_id", 1))
        tracker.tracks = [Track.from_dict(t, tracker.config.history) for t in raw.get("tracks", [])]
        return tracker
