"""Per-camera state machine: detections entries in, alert decisions out (no I/O).

Each ``ok`` detections entry of a camera goes through:

1. the camera's zones (:class:`~services.alerts.zones.ZoneBook`): faces inside an ignore
   mask, or outside every include zone, are dropped (counted by reason in
   :attr:`EntryOutcome.ignored`; the latest entry marks them, ``latest["ignored"]``);
2. the camera's :class:`~services.alerts.tracker.IouTracker` (one track per person);
3. the rule (:mod:`services.alerts.rules`) per track: one alert per track and violation,
   the cooldown per track;
4. with the camera's ``group_window`` > 0, the tracks that alert within the window of
   the first are collected in a pending group, sent as ONE alert (``violators``,
   ``track_ids``) by the camera's first entry at or after the window's end (any status).
   The group alert shows the frame where the window opened, with the first violator's
   face as its ``box``.

For each camera the engine keeps the tracker (with each track's last alert time), the
pending group, the ids of its recent frames (duplicate detections entries of one frame
are dropped), per-second face counts over the compliance window, the capture time of its
last alert and its latest entry (for the dashboard's live picture). All of it serialises
to JSON (:meth:`CameraState.to_dict`; states stored by earlier builds still load), and
the service stores the state of every camera a batch touched in the same SQLite
transaction as the batch's alerts. Time is the frames' capture time, so processing the
same entries from the same state always gives the same alerts with the same ids.

Compliance counts the faces kept by the zones that pass the camera's ``min_score`` and
``min_face`` thresholds (both labels): ``masked / all`` over the last
``compliance_window`` seconds.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from facemask.contracts.wire import DetectionsEntry, parse_detections
from facemask.core.types import Detections
from services.alerts.config import AlertSettings
from services.alerts.rules import (
    MASK,
    Decision,
    Rule,
    best_score,
    complies,
    eligible,
    evaluate,
    rule_for,
)
from services.alerts.tracker import Box, IouTracker, Track, TrackerConfig
from services.alerts.zones import KEEP, REASONS, ZoneBook

RECENT_FRAMES = 256
FPS_WINDOW = 10.0
_ALERT_NS = uuid.UUID("6f1d4f3e-7a55-4e0b-9a8e-3f1f3c0d9a11")


def alert_id_for(camera_id: str, frame_sid: str, track_id: int) -> str:
    """Deterministic alert id: re-processing the same entry gives the same id."""
    return uuid.uuid5(_ALERT_NS, f"{camera_id}\n{frame_sid}\n{track_id}").hex


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert decided by the engine, before its snapshot and storage."""

    alert_id: str
    camera_id: str
    ts: float
    frame_id: int
    frame_sid: str
    stream: str
    track_id: int
    score: float
    box: tuple[int, int, int, int]
    width: int
    height: int
    detections: Detections
    rule: Rule
    violators: int = 1  # people this alert names (more than 1: a merged group)
    track_ids: tuple[int, ...] = ()  # their tracks, the one of ``box`` first


@dataclass(slots=True)
class EntryOutcome:
    """What one detections entry did."""

    duplicate: bool = False
    alerts: list[NewAlert] = field(default_factory=list)
    faces: list[str] = field(default_factory=list)
    suppressed: int = 0  # violating tracks held back by their own cooldown
    ignored: Counter[str] = field(default_factory=Counter)  # faces dropped, by reason


@dataclass(slots=True)
class PendingGroup:
    """Violators collected while a camera's grouping window is open: the frame where it
    opened (the alert's frame) and each violator's ``[track_id, box, score]``."""

    opened: float
    stream: str
    frame_sid: str
    frame_id: int
    width: int
    height: int
    dets: list[dict[str, Any]]
    members: list[tuple[int, Box, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "opened": self.opened,
            "stream": self.stream,
            "frame_sid": self.frame_sid,
            "frame_id": self.frame_id,
            "w": self.width,
            "h": self.height,
            "dets": self.dets,
            "members": [[tid, list(box), score] for tid, box, score in self.members],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PendingGroup:
        """Inverse of :meth:`to_dict`."""
        return cls(
            opened=float(raw["opened"]),
            stream=str(raw["stream"]),
            frame_sid=str(raw["frame_sid"]),
            frame_id=int(raw["frame_id"]),
            width=int(raw["w"]),
            height=int(raw["h"]),
            dets=list(raw["dets"]),
            members=[
                (int(tid), (int(b[0]), int(b[1]), int(b[2]), int(b[3])), float(score))
                for tid, b, score in raw["members"]
            ],
        )


@dataclass(slots=True)
class CameraState:
    """Everything the engine knows about one camera."""

    camera_id: str
    tracker: IouTracker
    last_alert_ts: float | None = None  # the camera's last alert (shown, not a cooldown)
    group: PendingGroup | None = None
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    recent_set: set[int] = field(default_factory=set)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # second -> [masked, all]
    latest: dict[str, Any] | None = None
    last_ts: float = 0.0
    last_done_ts: float = 0.0
    frames: int = 0
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=512))

    def remember(self, frame_id: int) -> bool:
        """Record a frame id; False when it was seen recently (a duplicate)."""
        if frame_id in self.recent_set:
            return False
        if len(self.recent) == self.recent.maxlen:
            self.recent_set.discard(self.recent[0])
        self.recent.append(frame_id)
        self.recent_set.add(frame_id)
        return True

    def count_faces(self, ts: float, masked: int, total: int, window: float) -> None:
        """Add one frame's face counts to its second's bucket, dropping old seconds."""
        second = int(ts)
        bucket = self.buckets.setdefault(second, [0, 0])
        bucket[0] += masked
        bucket[1] += total
        horizon = ts - window - 1
        for old in [s for s in self.buckets if s < horizon]:
            del self.buckets[old]

    def compliance(self, now: float, window: float) -> tuple[int, int]:
        """``(masked, all)`` faces over the window ending at ``now``."""
        masked = total = 0
        for second, (m, t) in self.buckets.items():
            if now - window < second + 1 and second <= now:
                masked += m
                total += t
        return masked, total

    def fps(self, now: float) -> float:
        """Detections entries per second over the last few seconds (capture time)."""
        recent = [t for t in self.arrivals if now - FPS_WINDOW <= t <= now + 1.0]
        if len(recent) < 2:
            return 0.0
        span = max(recent) - min(recent)
        return (len(recent) - 1) / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (what a restart needs)."""
        return {
            "camera_id": self.camera_id,
            "tracker": self.tracker.to_dict(),
            "last_alert_ts": self.last_alert_ts,
            "group": self.group.to_dict() if self.group else None,
            "recent": list(self.recent),
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "latest": self.latest,
            "last_ts": self.last_ts,
            "last_done_ts": self.last_done_ts,
            "frames": self.frames,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], config: TrackerConfig) -> CameraState:
        """Inverse of :meth:`to_dict`; a state stored before tracks had their own
        cooldown gives its alerted tracks the camera's last alert time."""
        group = raw.get("group")
        state = cls(
            camera_id=str(raw["camera_id"]),
            tracker=IouTracker.from_dict(raw.get("tracker", {}), config),
            last_alert_ts=raw.get("last_alert_ts"),
            group=PendingGroup.from_dict(group) if group else None,
            buckets={int(k): [int(v[0]), int(v[1])] for k, v in raw.get("buckets", {}).items()},
            latest=raw.get("latest"),
            last_ts=float(raw.get("last_ts", 0.0)),
            last_done_ts=float(raw.get("last_done_ts", 0.0)),
            frames=int(raw.get("frames", 0)),
        )
        for frame_id in raw.get("recent", []):
            state.remember(int(frame_id))
        for track in state.tracker.tracks:
            if track.alerted and track.last_alert_ts is None:
                track.last_alert_ts = state.last_alert_ts
        return state


@dataclass(frozen=True, slots=True)
class CameraSummary:
    """A consistent copy of one camera's statistics (for the API and the gauges)."""

    camera_id: str
    last_ts: float
    last_done_ts: float
    fps: float
    masked: int
    faces: int
    frames: int
    last_alert_ts: float | None
    tracks: int

    @property
    def compliance(self) -> float | None:
        """masked / all faces over the window; None without faces."""
        return self.masked / self.faces if self.faces else None


class AlertEngine:
    """All cameras' states; thread-safe (the consumer writes, the API reads)."""

    def __init__(
        self,
        default_rule: Rule,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        tracker: TrackerConfig | None = None,
        compliance_window: float = 60.0,
        zones: ZoneBook | None = None,
    ) -> None:
        self.default_rule = default_rule
        self.zones = zones if zones is not None else ZoneBook()
        self.overrides = dict(overrides or {})
        # built once: the rule is looked up per detections entry
        self._rules = {cid: rule_for(cid, default_rule, self.overrides) for cid in self.overrides}
        self.compliance_window = compliance_window
        self._tracker_base = tracker or TrackerConfig()
        self._lock = threading.RLock()
        self._cameras: dict[str, CameraState] = {}
        self._dirty: set[str] = set()

    @classmethod
    def from_settings(cls, settings: AlertSettings, zones: ZoneBook | None = None) -> AlertEngine:
        """The engine the service's settings describe (``zones``: the cameras' zones,
        default the configured ones only)."""
        return cls(
            Rule(
                k=settings.rule_k,
                n=settings.rule_n,
                min_score=settings.min_score,
                min_face=settings.min_face,
                cooldown=settings.cooldown,
                group_window=settings.group_window,
            ),
            {cid: o.model_dump() for cid, o in settings.rules.items()},
            tracker=TrackerConfig(min_iou=settings.track_iou, reentry=settings.track_reentry),
            compliance_window=settings.compliance_window,
            zones=zones if zones is not None else ZoneBook(settings.zones),
        )

    # -- configuration ---------------------------------------------------------------

    def rule(self, camera_id: str) -> Rule:
        """The rule of a camera (defaults plus its overrides)."""
        return self._rules.get(camera_id, self.default_rule)

    def _tracker_config(self, rule: Rule) -> TrackerConfig:
        return replace(self._tracker_base, history=rule.n)  # Rule ensures n >= 1

    def _camera(self, camera_id: str) -> CameraState:
        state = self._cameras.get(camera_id)
        if state is None:
            config = self._tracker_config(self.rule(camera_id))
            state = CameraState(camera_id, IouTracker(config))
            self._cameras[camera_id] = state
        return state

    # -- processing ------------------------------------------------------------------

    def process(self, stream: str, sid: str, entry: DetectionsEntry) -> EntryOutcome:
        """Feed one detections entry; returns the alerts it raises."""
        with self._lock:
            camera = self._camera(entry.camera_id)
            if not camera.remember(entry.frame_id):
                return EntryOutcome(duplicate=True)
            self._dirty.add(entry.camera_id)
            camera.frames += 1
            camera.arrivals.append(entry.capture_ts)
            camera.last_ts = max(camera.last_ts, entry.capture_ts)
            camera.last_done_ts = max(camera.last_done_ts, entry.done_ts)
            faces, size = entry.detections, (entry.width, entry.height)
            verdict = self.zones.get(entry.camera_id).classify(faces)
            camera.latest = {
                "stream": stream,
                "sid": sid,
                "frame_sid": entry.frame_sid,
                "frame_id": entry.frame_id,
                "ts": entry.capture_ts,
                "w": entry.width,
                "h": entry.height,
                "dets": faces.to_json(entry.width, entry.height, digits=6),
                "ignored": np.flatnonzero(verdict != KEEP).tolist(),  # indices into dets
                "status": entry.status,
            }
            outcome = EntryOutcome(faces=faces.labels)
            rule = self.rule(entry.camera_id)
            group = camera.group
            if group is not None and entry.capture_ts >= group.opened + rule.group_window:
                outcome.alerts.append(self._group_alert(camera, group, rule))
            if entry.status != "ok":
                # Not run through the model: no evidence either way, tracks keep waiting.
                return outcome
            for code in verdict[verdict != KEEP].tolist():
                outcome.ignored[REASONS[code]] += 1
            kept = faces[verdict == KEEP]
            tracks = camera.tracker.update(kept, entry.width, entry.height, entry.capture_ts)
            counted = eligible(kept, size, rule)  # both labels count for compliance
            total = int(counted.sum())
            masked = int((counted & (kept.class_ids == MASK)).sum())
            camera.count_faces(entry.capture_ts, masked, total, self.compliance_window)
            for track in tracks:
                if track.alerted and complies(track, rule):
                    track.alerted = False  # masked again: the next violation alerts
                decision = evaluate(track, rule, entry.capture_ts)
                if decision is Decision.COOLDOWN:
                    outcome.suppressed += 1
                if decision is not Decision.ALERT:
                    continue
                track.alerted = True
                track.last_alert_ts = entry.capture_ts
                if rule.group_window > 0:
                    self._join_group(camera, stream, entry, track, rule)
                    continue
                camera.last_alert_ts = entry.capture_ts
                outcome.alerts.append(
                    NewAlert(
                        alert_id=alert_id_for(entry.camera_id, entry.frame_sid, track.track_id),
                        camera_id=entry.camera_id,
                        ts=entry.capture_ts,
                        frame_id=entry.frame_id,
                        frame_sid=entry.frame_sid,
                        stream=stream,
                        track_id=track.track_id,
                        score=best_score(track, rule),
                        box=track.box,
                        width=entry.width,
                        height=entry.height,
                        detections=faces,
                        rule=rule,
                        track_ids=(track.track_id,),
                    )
                )
            return outcome

    @staticmethod
    def _join_group(
        camera: CameraState, stream: str, entry: DetectionsEntry, track: Track, rule: Rule
    ) -> None:
        """Add a violator to the camera's pending group (opening it at this frame)."""
        if camera.group is None:
            camera.group = PendingGroup(
                opened=entry.capture_ts,
                stream=stream,
                frame_sid=entry.frame_sid,
                frame_id=entry.frame_id,
                width=entry.width,
                height=entry.height,
                dets=entry.detections.to_json(entry.width, entry.height, digits=6),
            )
        if all(tid != track.track_id for tid, _box, _score in camera.group.members):
            camera.group.members.append((track.track_id, track.box, best_score(track, rule)))

    @staticmethod
    def _group_alert(camera: CameraState, group: PendingGroup, rule: Rule) -> NewAlert:
        """The one alert of a closed group: its first violator in the frame it opened."""
        camera.group = None
        camera.last_alert_ts = group.opened
        track_id, box, score = group.members[0]
        return NewAlert(
            alert_id=alert_id_for(camera.camera_id, group.frame_sid, track_id),
            camera_id=camera.camera_id,
            ts=group.opened,
            frame_id=group.frame_id,
            frame_sid=group.frame_sid,
            stream=group.stream,
            track_id=track_id,
            score=score,
            box=box,
            width=group.width,
            height=group.height,
            detections=parse_detections(group.dets, group.width, group.height),
            rule=rule,
            violators=len(group.members),
            track_ids=tuple(tid for tid, _box, _score in group.members),
        )

    # -- persistence -----------------------------------------------------------------

    def take_dirty(self) -> dict[str, dict[str, Any]]:
        """Serialised state of every camera changed since the last call."""
        with self._lock:
            out = {cid: self._cameras[cid].to_dict() for cid in self._dirty}
            self._dirty.clear()
            return out

    def restore(self, states: Iterable[Mapping[str, Any]]) -> None:
        """Replace every camera's state with stored ones (start, or after a failed batch)."""
        with self._lock:
            self._cameras.clear()
            self._dirty.clear()
            for raw in states:
                camera_id = str(raw["camera_id"])
                config = self._tracker_config(self.rule(camera_id))
                self._cameras[camera_id] = CameraState.from_dict(raw, config)

    # -- reading ---------------------------------------------------------------------

    def camera_ids(self) -> list[str]:
        """Cameras with state."""
        with self._lock:
            return sorted(self._cameras)

    def latest(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's latest entry (frame sid, size, detections), if any."""
        with self._lock:
            state = self._cameras.get(camera_id)
            return dict(state.latest) if state and state.latest else None

    def summaries(self, now: float) -> dict[str, CameraSummary]:
        """Statistics of every camera at wall-clock time ``now``."""
        with self._lock:
            out = {}
            for camera_id, state in self._cameras.items():
                masked, faces = state.compliance(now, self.compliance_window)
                out[camera_id] = CameraSummary(
                    camera_id=camera_id,
                    last_ts=state.last_ts,
                    last_done_ts=state.last_done_ts,
                    fps=state.fps(now),
                    masked=masked,
                    faces=faces,
                    frames=state.frames,
                    last_alert_ts=state.last_alert_ts,
                    tracks=len(state.tracker.tracks),
                )
            return out

    # -- forgetting (camera health) --------------------------------------------------

    def forget(self, camera_id: str) -> bool:
        """Drop a camera's state (a stale camera removed); True when it had one. The caller
        deletes the stored state too (:meth:`AlertStore.forget_camera`)."""
        with self._lock:
            self._dirty.discard(camera_id)
            return self._cameras.pop(camera_id, None) is not None
