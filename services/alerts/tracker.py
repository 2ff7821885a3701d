"""A small IoU tracker: associates the faces of one camera across frames.

Greedy association: every (track, detection) pair whose IoU reaches ``min_iou`` is a
candidate; candidates are taken best IoU first, each track and each detection at most
once. Unmatched detections start new tracks; a track that is not matched for more than
``max_missed`` frames, or not seen for more than ``max_gap`` seconds, ends. The label is
not used for association: a face whose label flickers between ``mask`` and ``no_mask``
stays one track, which is what the K-of-N rule needs.

The tracker is pure (no clock, no I/O): time comes from the frames' capture timestamps,
so replaying the same entries gives the same tracks, and its whole state serialises to a
small JSON-ready dict (:meth:`IouTracker.to_dict` / :meth:`IouTracker.from_dict`), which
the alert service stores with every batch it commits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Box = tuple[int, int, int, int]
HISTORY_CAP = 1000


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` pixel boxes (0 when disjoint)."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, ix2 - ix1) * max(0, iy2 - iy1)
    if inter == 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / float(area_a + area_b - inter)


@dataclass(frozen=True, slots=True)
class Observation:
    """One face as the rules see it (label, score, pixel box)."""

    label: str
    score: float
    box: Box

    @property
    def size(self) -> int:
        """The smaller side of the box in pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def to_list(self) -> list[Any]:
        """Compact JSON form ``[label, score, x1, y1, x2, y2]``."""
        return [self.label, round(self.score, 4), *self.box]

    @classmethod
    def from_list(cls, raw: Sequence[Any]) -> Observation:
        """Inverse of :meth:`to_list`."""
        label, score, x1, y1, x2, y2 = raw
        return cls(str(label), float(score), (int(x1), int(y1), int(x2), int(y2)))


@dataclass(slots=True)
class Track:
    """One face followed across frames."""

    track_id: int
    box: Box
    first_ts: float
    last_ts: float
    history: deque[Observation] = field(default_factory=lambda: deque(maxlen=HISTORY_CAP))
    missed: int = 0
    hits: int = 0
    alerted: bool = False

    @property
    def last(self) -> Observation:
        """The latest observation."""
        return self.history[-1]

    def observe(self, obs: Observation, ts: float) -> None:
        """Record a matched detection."""
        self.history.append(obs)
        self.box = obs.box
        self.last_ts = ts
        self.missed = 0
        self.hits += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "id": self.track_id,
            "box": list(self.box),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "missed": self.missed,
            "hits": self.hits,
            "alerted": self.alerted,
            "history": [o.to_list() for o in self.history],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], history_len: int) -> Track:
        """Inverse of :meth:`to_dict`."""
        x1, y1, x2, y2 = raw["box"]
        history: deque[Observation] = deque(
            (Observation.from_list(o) for o in raw["history"]), maxlen=history_len
        )
        return cls(
            track_id=int(raw["id"]),
            box=(int(x1), int(y1), int(x2), int(y2)),
            first_ts=float(raw["first_ts"]),
            last_ts=float(raw["last_ts"]),
            history=history,
            missed=int(raw["missed"]),
            hits=int(raw["hits"]),
            alerted=bool(raw["alerted"]),
        )


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Association parameters."""

    min_iou: float = 0.3
    max_missed: int = 10
    max_gap: float = 5.0
    history: int = 8  # observations kept per track (>= the rules' N)


class IouTracker:
    """Greedy IoU tracker of one camera (see the module docstring)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, observations: Sequence[Observation], ts: float) -> list[Track]:
        """Associate one frame's faces; returns the track of each observation, in order."""
        cfg = self.config
        # End tracks that were away too long before matching, so a new person standing
        # where someone stood minutes ago does not inherit their history.
        self.tracks = [t for t in self.tracks if ts - t.last_ts <= cfg.max_gap]
        pairs = []
        for ti, track in enumerate(self.tracks):
            for oi, obs in enumerate(observations):
                overlap = iou(track.box, obs.box)
                if overlap >= cfg.min_iou:
                    pairs.append((overlap, ti, oi))
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        assigned: dict[int, Track] = {}
        used_tracks: set[int] = set()
        for _overlap, ti, oi in pairs:
            if ti in used_tracks or oi in assigned:
                continue
            used_tracks.add(ti)
            assigned[oi] = self.tracks[ti]
        survivors: list[Track] = []
        for ti, track in enumerate(self.tracks):
            if ti not in used_tracks:
                track.missed += 1
                if track.missed > cfg.max_missed:
                    continue
            survivors.append(track)
        self.tracks = survivors
        out: list[Track] = []
        for oi, obs in enumerate(observations):
            found = assigned.get(oi)
            if found is None:
                track = Track(
                    track_id=self.next_id,
                    box=obs.box,
                    first_ts=ts,
                    last_ts=ts,
                    history=deque(maxlen=cfg.history),
                )
                self.next_id += 1
                self.tracks.append(track)
            else:
                track = found
            track.observe(obs, ts)
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
