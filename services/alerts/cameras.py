"""What the service knows of each camera: registry facts plus the engine's statistics.

:class:`CameraDirectory` reads the ingest nodes' camera registry (briefly cached, the last
names kept in the database for offline cameras); :class:`CameraBoard` joins it with the
engine's per-camera statistics and the alert counts into the camera list of the API, the
gauges and the MQTT compliance states, and finds a camera's latest picture.

Both are bounded: the directory lists only valid camera ids, at most ``max_cameras``
(:func:`facemask.contracts.registry.read_cameras`), and the board lists at most
``max_cameras`` cameras: the registered ones first, then the cameras only seen in the
detections, most recently active first; so hostile ids cannot grow the camera list,
the gauges or the dashboard without bound.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from facemask.contracts.registry import DEFAULT_MAX_CAMERAS, read_cameras
from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import is_valid_camera_id
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient
from services.alerts.engine import AlertEngine, CameraSummary
from services.alerts.snapshots import LatestFrames
from services.alerts.store import AlertStore

logger = logging.getLogger(__name__)


class UnknownCameraError(LookupError):
    """A camera neither registered nor seen in the detections."""


class CameraDirectory:
    """The ingest nodes' camera registry, cached briefly (many browsers, few reads).

    A camera's hash expires when its node stops heart-beating; the last fields seen
    (name, location, ...) are kept in the database so an offline camera keeps its name.
    """

    STATIC_FIELDS = ("id", "name", "location", "fps", "resolution", "node", "source_kind")

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        store: AlertStore,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
    ) -> None:
        self.client = client
        self.max_cameras = max_cameras
        self.layout = layout
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._all: tuple[float | None, list[dict[str, str]]] = (None, [])
        self._known: dict[str, dict[str, str]] = store.camera_info()
        self._last_seen: dict[str, str] = {}

    def all(self) -> list[dict[str, str]]:
        """Every registered camera (``online`` "1" / "0"); the last list while Redis is
        unreachable."""
        with self._lock:
            stamp, cameras = self._all
            if stamp is not None and self.clock() - stamp < self.ttl:
                return cameras
            try:
                cameras = read_cameras(self.client, self.layout, self.max_cameras)
            except CONNECTION_ERRORS:
                return cameras
            changed = {}
            merged = []
            for camera in cameras:
                camera_id = camera["id"]
                if camera.get("online") == "1":
                    self._last_seen[camera_id] = camera.get("last_seen", "")
                    static = {k: camera[k] for k in self.STATIC_FIELDS if camera.get(k)}
                    if self._known.get(camera_id) != static:
                        self._known[camera_id] = static
                        changed[camera_id] = static
                    merged.append(camera)
                else:
                    seen = self._last_seen.get(camera_id)
                    extra = {"last_seen": seen} if seen else {}
                    merged.append({**self._known.get(camera_id, {}), **extra, **camera})
            if changed:
                try:
                    self.store.save_camera_info(changed)
                except Exception:
                    logger.exception("cannot store camera names")
            self._all = (self.clock(), merged)
            return merged

    def info(self, camera_id: str) -> Mapping[str, str]:
        """Registry fields of one camera ({} when unknown)."""
        for camera in self.all():
            if camera.get("id") == camera_id:
                return camera
        return self._known.get(camera_id, {})


def camera_status(
    camera_id: str,
    registry: Mapping[str, str] | None,
    summary: CameraSummary | None,
    *,
    now: float,
    online_window: float,
) -> dict[str, Any]:
    """One camera as the API shows it: registry facts plus the engine's statistics."""
    reg = dict(registry or {})
    last_frame = summary.last_ts if summary else 0.0
    if reg.get("online") == "1":
        status = reg.get("status") or "up"
    elif reg:
        status = "offline"
    else:
        status = "up" if summary and now - summary.last_ts <= online_window else "offline"
    try:
        registry_seen = float(reg.get("last_seen", 0) or 0)
    except ValueError:
        registry_seen = 0.0
    last_seen = max(registry_seen, last_frame) or None
    compliance = summary.compliance if summary else None
    try:
        configured_fps = float(reg["fps"]) if reg.get("fps") else None
    except ValueError:
        configured_fps = None
    return {
        "id": camera_id,
        "name": reg.get("name") or camera_id,
        "location": reg.get("location", ""),
        "status": status,
        "online": status == "up",
        "last_seen": last_seen,
        "last_frame_ts": last_frame or None,
        "fps": round(summary.fps, 2) if summary else 0.0,
        "configured_fps": configured_fps,
        "resolution": reg.get("resolution", ""),
        "node": reg.get("node", ""),
        "last_error": reg.get("last_error", ""),
        "compliance": None if compliance is None else round(compliance, 4),
        "masked": summary.masked if summary else 0,
        "faces": summary.faces if summary else 0,
        "tracks": summary.tracks if summary else 0,
        "last_alert_ts": summary.last_alert_ts if summary else None,
    }


class CameraBoard:
    """Every camera known to the registry or seen in the detections, with its status."""

    def __init__(
        self,
        directory: CameraDirectory,
        engine: AlertEngine,
        store: AlertStore,
        latest_frames: LatestFrames,
        layout: StreamLayout,
        *,
        online_window: float,
        clock: Callable[[], float] = time.time,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
    ) -> None:
        self.directory = directory
        self.engine = engine
        self.store = store
        self.latest_frames = latest_frames
        self.layout = layout
        self.online_window = online_window
        self.clock = clock
        self.max_cameras = max_cameras

    def _listed(
        self, registry: Mapping[str, Any], summaries: Mapping[str, CameraSummary]
    ) -> list[str]:
        """The ids the board lists, sorted: registered ones first, then those only seen in
        the detections (most recent first), at most ``max_cameras`` in all."""
        ids = [c for c in registry if is_valid_camera_id(c)][: self.max_cameras]
        room = self.max_cameras - len(ids)
        if room > 0:
            seen = [c for c in summaries if c not in registry and is_valid_camera_id(c)]
            seen.sort(key=lambda c: summaries[c].last_ts, reverse=True)
            ids += seen[:room]
        return sorted(ids)

    def cameras(
        self, now: float | None = None, *, after: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The cameras (sorted by id, at most ``max_cameras``): :func:`camera_status` plus
        the compliance window, the alerts of the last 24 hours and the camera's rule; with
        ``after`` / ``limit`` only the page of ids after ``after``."""
        return self.page(now, after=after, limit=limit)[0]

    def page(
        self, now: float | None = None, *, after: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], bool, int]:
        """``(cameras, more, total)``: the page of :meth:`cameras` after ``after`` (at most
        ``limit``), whether more follow, and how many cameras the board lists in all."""
        now = self.clock() if now is None else now
        registry = {c["id"]: c for c in self.directory.all()}
        summaries = self.engine.summaries(now)
        listed = self._listed(registry, summaries)
        start = bisect.bisect_right(listed, after) if after is not None else 0
        end = len(listed) if limit is None else min(len(listed), start + limit)
        recent = self.store.count_alerts(since=now - 86400)
        out = []
        for camera_id in listed[start:end]:
            doc = camera_status(
                camera_id,
                registry.get(camera_id),
                summaries.get(camera_id),
                now=now,
                online_window=self.online_window,
            )
            doc["window_s"] = self.engine.compliance_window
            doc["alerts_24h"] = recent.get(camera_id, 0)
            doc["rule"] = self.engine.rule(camera_id).to_dict()
            out.append(doc)
        return out, end < len(listed), len(listed)

    def frames_stream_of(self, latest: Mapping[str, Any] | None) -> str | None:
        """The frame stream of a latest-entry record."""
        if not latest:
            return None
        return self.layout.frames(self.layout.partition_of_key(str(latest["stream"])))

    def latest_picture(self, camera_id: str) -> tuple[str, bytes] | None:
        """``(frame sid, JPEG)`` of the camera's latest frame with its detections drawn;
        None before its first frame; :class:`UnknownCameraError` for a camera never seen."""
        entry = self.engine.latest(camera_id)
        if entry is None and camera_id not in {c["id"] for c in self.directory.all()}:
            raise UnknownCameraError(camera_id)
        return self.latest_frames.get(camera_id, entry, self.frames_stream_of(entry))
