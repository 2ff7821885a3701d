"""What the service knows of each camera: registry facts, the engine's statistics, health.

:class:`CameraDirectory` reads the ingest nodes' camera registry (briefly cached, the last
names and ``last_seen`` kept in the database for offline cameras); :class:`CameraBoard`
joins it with the engine's per-camera statistics, the alert counts and the arrival times
of the detections entries into the camera list of the API, the gauges and the MQTT
compliance states, finds a camera's latest picture and forgets stale cameras.

Camera states (:func:`camera_health`), decided from three independent facts:

* the registry heartbeat: the camera's hash exists (its node heart-beats) and its
  ``status`` (``up``, ``reconnecting``, ...);
* whether the node publishes frames: ``last_frame_ts`` against ``last_seen`` of the same
  heartbeat (one clock, the node's: no skew between hosts); nodes older than that field
  are judged by ``status`` and ``frames_published`` alone;
* when THIS service last received a detections entry of the camera run through the model
  (``status=ok``): wall-clock arrival time on the board's clock (:class:`CameraActivity`),
  not the capture time, and never restored from the database: after a restart the
  service waits ``analysis_timeout`` from its start before it says ``not_analysed``.

======================  ===========================================================
state                   when
======================  ===========================================================
``offline``             no heartbeat (hash expired) or the node stopped the camera;
                        a camera only seen in the detections: no entry for
                        ``online_window`` seconds
``no_frames``           heart-beats but publishes no frame (source starting,
                        reconnecting, ended, or no frame for ``frame_timeout``
                        seconds); ``state_reason`` is the node's ``last_error``
``not_analysed``        frames arrive but no analysed detections entry for
                        ``analysis_timeout`` seconds (inference down, stalled, or
                        skipping every frame as too old)
``live``                frames arrive and detections follow
======================  ===========================================================

Both timeouts grow to three frame intervals of the camera's configured ``fps`` when that
is longer (``fps=0.1``: 30 s), so a slow camera does not flap. ``online`` in the API is ``live`` or
``not_analysed`` (frames arrive); ``status`` keeps the node's status word (compatibility).

Both classes are bounded: the directory lists only valid camera ids, at most
``max_cameras`` (:func:`facemask.contracts.registry.read_cameras`), and the board lists
at most ``max_cameras`` cameras: the registered ones first, then the cameras only seen in
the detections, most recently active first; so hostile ids cannot grow the camera list,
the gauges or the dashboard without bound. The board's own memories (arrivals, states,
pictures) are bounded the same way.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from facemask.contracts.registry import DEFAULT_MAX_CAMERAS, read_cameras, unregister
from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, is_valid_camera_id
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient
from services.alerts.engine import AlertEngine, CameraSummary
from services.alerts.metrics import AlertMetrics
from services.alerts.snapshots import LatestFrames
from services.alerts.store import AlertStore

logger = logging.getLogger(__name__)

LIVE = "live"
NOT_ANALYSED = "not_analysed"
NO_FRAMES = "no_frames"
OFFLINE = "offline"
STATES = (LIVE, NOT_ANALYSED, NO_FRAMES, OFFLINE)
"""Every camera state, in the order of the API's documentation."""

SEEN_PERSIST = 600.0
"""A camera's stored ``last_seen`` is refreshed at least this often (seconds) while it
heart-beats (and once when it goes offline): retention and the names of offline cameras
survive a restart of the service with at most this error."""
MAX_NAME = 200
"""Longest camera name shown (a registry hash is written by any ingest node)."""
SLOW_FRAMES = 3.0
"""A slow camera is given this many frame intervals before a timeout applies."""


class UnknownCameraError(LookupError):
    """A camera neither registered nor seen in the detections."""


class CameraActiveError(RuntimeError):
    """A camera that cannot be forgotten now: its node heart-beats (or, for a camera only
    seen in the detections, its entries still arrive)."""


class CameraDirectory:
    """The ingest nodes' camera registry, cached briefly (many browsers, few reads).

    A camera's hash expires when its node stops heart-beating; the last fields seen
    (name, location, ..., ``last_seen``) are kept in the database so an offline camera
    keeps its name and the time it was last seen, across restarts of this service.
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
                known = self._known.get(camera_id, {})
                if camera.get("online") == "1":
                    seen = camera.get("last_seen", "")
                    self._last_seen[camera_id] = seen
                    static = {k: camera[k] for k in self.STATIC_FIELDS if camera.get(k)}
                    stored = {k: v for k, v in known.items() if k != "last_seen"}
                    if stored != static or _number(seen) - _number(known.get("last_seen")) > (
                        SEEN_PERSIST
                    ):
                        self._known[camera_id] = changed[camera_id] = {**static, "last_seen": seen}
                    merged.append(camera)
                else:
                    seen = self._last_seen.get(camera_id, "")
                    if seen and seen != known.get("last_seen"):  # went offline: keep when
                        self._known[camera_id] = changed[camera_id] = {**known, "last_seen": seen}
                    merged.append({**self._known.get(camera_id, {}), **camera})
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

    def known(self, camera_id: str) -> Mapping[str, str]:
        """The stored fields of a camera (name, location, last_seen; {} when none)."""
        with self._lock:
            return dict(self._known.get(camera_id, {}))

    def heartbeat(self, camera_id: str) -> dict[str, str] | None:
        """The camera's registry hash read now (not cached); None when it has expired.

        Raises a Redis connection error when Redis is unreachable."""
        raw: Any = self.client.hgetall(self.layout.camera(camera_id))
        if not raw:
            return None
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }

    def forget(self, camera_id: str) -> None:
        """Remove the camera from the registry and from what this service remembers of it
        (stored fields too). Raises a Redis connection error before changing anything
        when Redis is unreachable."""
        unregister(self.client, self.layout, camera_id)
        with self._lock:
            self._known.pop(camera_id, None)
            self._last_seen.pop(camera_id, None)
            self._all = (None, [c for c in self._all[1] if c.get("id") != camera_id])


def _number(value: Any) -> float:
    """A registry number (unix seconds, fps); 0.0 when absent or not a finite number."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _display_name(camera_id: str, *sources: Mapping[str, str] | None) -> str:
    """The first non-blank ``name`` of ``sources`` (registry, then stored), else the id."""
    for source in sources:
        name = " ".join(str((source or {}).get("name") or "").split())[:MAX_NAME]
        if name:
            return name
    return camera_id


def _ago(seconds: float) -> str:
    """A duration for people: "12 s", "5 min", "3 h", "2 d"."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


# -- health ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthRules:
    """The thresholds of :func:`camera_health` (settings ``analysis_timeout``,
    ``frame_timeout``, ``online_window``)."""

    analysis_timeout: float = 5.0
    frame_timeout: float = 10.0
    online_window: float = 15.0


@dataclass(slots=True)
class Arrival:
    """When this service last received detections entries of one camera (its clock)."""

    entry: float
    """Any entry (analysed or skipped)."""
    analysed: float | None = None
    """An entry run through the model (``status=ok``); None: none since the start."""
    skipped: str = ""
    """Why the entries after the last analysed one were skipped ("" when none was)."""


class CameraActivity:
    """Arrival times of the detections entries per camera, at most ``limit`` cameras (the
    least recently active forgotten first); thread-safe. Memory only, on purpose: an
    arrival is this process's observation, not state to restore."""

    def __init__(self, limit: int = 2 * DEFAULT_MAX_CAMERAS) -> None:
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self._arrivals: OrderedDict[str, Arrival] = OrderedDict()

    def record(self, entries: Iterable[DetectionsEntry], now: float) -> None:
        """Entries processed at ``now``."""
        with self._lock:
            for entry in entries:
                arrival = self._arrivals.get(entry.camera_id)
                if arrival is None:
                    arrival = self._arrivals[entry.camera_id] = Arrival(now)
                arrival.entry = now
                if entry.status == "ok":
                    arrival.analysed, arrival.skipped = now, ""
                else:
                    arrival.skipped = entry.reason or entry.status
                self._arrivals.move_to_end(entry.camera_id)
            while len(self._arrivals) > self.limit:
                self._arrivals.popitem(last=False)

    def get(self, camera_id: str) -> Arrival | None:
        """A copy of the camera's arrivals (None: no entry since the start)."""
        with self._lock:
            arrival = self._arrivals.get(camera_id)
            return None if arrival is None else replace(arrival)

    def forget(self, camera_id: str) -> None:
        """Drop a camera's arrivals."""
        with self._lock:
            self._arrivals.pop(camera_id, None)


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """A camera's state, why (for people), and since when the cause holds (None: unknown)."""

    state: str
    reason: str
    since: float | None = None


_NODE_STATUS = {
    "starting": "connecting to the source",
    "reconnecting": "reconnecting to the source",
    "ended": "the source ended (a file without loop)",
}


def camera_health(
    registry: Mapping[str, str] | None,
    arrival: Arrival | None,
    summary: CameraSummary | None,
    *,
    now: float,
    expect_since: float,
    rules: HealthRules,
) -> CameraHealth:
    """The state of one camera at ``now`` (see the module docstring).

    ``registry``: its registry fields (None: never registered, only seen in the
    detections); ``arrival``: when this service received its entries; ``summary``: the
    engine's statistics (capture times: the fallback of a camera outside the registry
    before its first arrival); ``expect_since``: since when detections can be expected
    (the service's start, or when the camera's frames started to flow): a camera is
    ``not_analysed`` once neither an analysed entry nor ``expect_since`` is within the
    timeout.
    """
    if not registry:
        return _detections_only(arrival, summary, now=now, rules=rules)
    seen = _number(registry.get("last_seen")) or None
    status = registry.get("status") or "up"
    error = registry.get("last_error", "")
    if registry.get("online") != "1":
        when = f" (last seen {_ago(now - seen)} ago)" if seen else ""
        return CameraHealth(OFFLINE, f"no heartbeat from its ingest node{when}", seen)
    if status == "stopped":
        return CameraHealth(OFFLINE, "stopped by its ingest node", seen)
    if status != "up":
        return CameraHealth(NO_FRAMES, error or _NODE_STATUS.get(status, status))
    fps = _number(registry.get("fps"))
    slow = SLOW_FRAMES / fps if fps > 0 else 0.0
    last_error = f" (last error: {error})" if error else ""  # the source is open again
    if "last_frame_ts" in registry:  # nodes before the field: status alone
        last_frame = _number(registry["last_frame_ts"])
        if not last_frame:
            return CameraHealth(NO_FRAMES, "waiting for the first frame" + last_error)
        gap = (seen or last_frame) - last_frame  # both on the node's clock
        if gap > max(rules.frame_timeout, slow):
            return CameraHealth(NO_FRAMES, f"no frame published for {_ago(gap)}{last_error}")
    elif registry.get("frames_published") == "0":
        return CameraHealth(NO_FRAMES, "waiting for the first frame" + last_error)
    analysed = arrival.analysed if arrival else None
    quiet_since = max(analysed or 0.0, expect_since)
    quiet = now - quiet_since
    if quiet > max(rules.analysis_timeout, slow):
        if arrival and arrival.skipped and arrival.entry > quiet_since:
            why = f"inference skips every frame ({arrival.skipped}) for {_ago(quiet)}"
        else:
            why = f"no detections for {_ago(quiet)} while frames arrive"
        return CameraHealth(NOT_ANALYSED, why, quiet_since)
    return CameraHealth(LIVE, "frames arrive and detections follow")


def _detections_only(
    arrival: Arrival | None, summary: CameraSummary | None, *, now: float, rules: HealthRules
) -> CameraHealth:
    """A camera outside the registry, judged by its detections entries alone."""
    last: float | None
    analysed: float | None
    if arrival is not None:
        last, analysed = arrival.entry, arrival.analysed
    else:  # nothing since the start: the capture time of the restored state
        last = analysed = summary.last_ts if summary and summary.last_ts else None
    if last is None or now - last > rules.online_window:
        when = f" for {_ago(now - last)}" if last else ""
        return CameraHealth(OFFLINE, f"not registered and no detections{when}", last)
    quiet_since = analysed or last
    if now - quiet_since > rules.analysis_timeout:
        why = (
            f"inference skips every frame ({arrival.skipped}) for {_ago(now - quiet_since)}"
            if arrival and arrival.skipped
            else f"no detections for {_ago(now - quiet_since)}"
        )
        return CameraHealth(NOT_ANALYSED, why, quiet_since)
    return CameraHealth(LIVE, "not registered; its detections arrive")


def camera_status(
    camera_id: str,
    registry: Mapping[str, str] | None,
    summary: CameraSummary | None,
    *,
    health: CameraHealth,
    since: float | None = None,
    has_frame: bool = False,
    known: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One camera as the API shows it: registry facts, the engine's statistics, its state.

    ``since``: when the state began (:class:`CameraBoard` keeps it across evaluations);
    ``known``: the stored fields of the camera (its name when the registry has none)."""
    reg = dict(registry or {})
    last_frame = summary.last_ts if summary else 0.0
    if reg.get("online") == "1":
        status = reg.get("status") or "up"
    elif reg:
        status = "offline"
    else:
        status = "offline" if health.state == OFFLINE else "up"
    last_seen = max(_number(reg.get("last_seen")), last_frame) or None
    compliance = summary.compliance if summary else None
    configured_fps = _number(reg.get("fps")) or None
    return {
        "id": camera_id,
        "name": _display_name(camera_id, reg, known),
        "location": reg.get("location", "") or (known or {}).get("location", ""),
        "status": status,
        "online": health.state in (LIVE, NOT_ANALYSED),
        "state": health.state,
        "state_reason": health.reason,
        "state_since": since,
        "has_frame": has_frame,
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


@dataclass(frozen=True, slots=True)
class _Observed:
    """The board's memory of a camera's state: since when, and since when frames flow."""

    state: str
    since: float | None
    flowing_since: float | None


class CameraBoard:
    """Every camera known to the registry or seen in the detections, with its state."""

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
        rules: HealthRules | None = None,
        retention: float = 0.0,
        metrics: AlertMetrics | None = None,
    ) -> None:
        self.directory = directory
        self.engine = engine
        self.store = store
        self.latest_frames = latest_frames
        self.layout = layout
        self.online_window = online_window
        self.clock = clock
        self.max_cameras = max_cameras
        self.rules = rules or HealthRules(online_window=online_window)
        self.retention = retention
        self.metrics = metrics
        self.activity = CameraActivity(2 * max_cameras)
        self._lock = threading.Lock()
        self._watching_since: float | None = None
        self._observed: dict[str, _Observed] = {}
        self._pictures: dict[str, tuple[str, bool]] = {}  # camera -> (frame sid, picture?)
        self._noticed: dict[str, float] = {}  # offline cameras with no time known

    # -- arrivals ----------------------------------------------------------------------

    def record(self, entries: Iterable[DetectionsEntry]) -> None:
        """Detections entries the consumer processed now (the consumer's hook)."""
        self.activity.record(entries, self.clock())

    def _watching(self, now: float) -> float:
        """Since when this board watches the detections (its first look)."""
        with self._lock:
            if self._watching_since is None:
                self._watching_since = now
            return self._watching_since

    # -- the list ----------------------------------------------------------------------

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
        if after is None and limit is None:
            self._prune(set(listed))
        start = bisect.bisect_right(listed, after) if after is not None else 0
        end = len(listed) if limit is None else min(len(listed), start + limit)
        recent = self.store.count_alerts(since=now - 86400)
        out = []
        for camera_id in listed[start:end]:
            reg, summary = registry.get(camera_id), summaries.get(camera_id)
            health, since = self._health(camera_id, reg, summary, now)
            doc = camera_status(
                camera_id,
                reg,
                summary,
                health=health,
                since=since,
                has_frame=self._has_frame(camera_id),
                known=None if reg else self.directory.known(camera_id),
            )
            doc["window_s"] = self.engine.compliance_window
            doc["alerts_24h"] = recent.get(camera_id, 0)
            doc["rule"] = self.engine.rule(camera_id).to_dict()
            out.append(doc)
        return out, end < len(listed), len(listed)

    def _health(
        self,
        camera_id: str,
        registry: Mapping[str, str] | None,
        summary: CameraSummary | None,
        now: float,
    ) -> tuple[CameraHealth, float | None]:
        """The camera's state now and since when; remembers it, logs and counts changes."""
        watching = self._watching(now)
        with self._lock:
            before = self._observed.get(camera_id)
        flowing_before = before is not None and before.state in (LIVE, NOT_ANALYSED)
        if before is None:
            expect = watching
        elif flowing_before:
            expect = before.flowing_since or watching
        else:  # frames (may) start to flow now: detections are due from now on
            expect = max(now, watching)
        health = camera_health(
            registry,
            self.activity.get(camera_id),
            summary,
            now=now,
            expect_since=expect,
            rules=self.rules,
        )
        flowing = health.state in (LIVE, NOT_ANALYSED)
        if before is not None and before.state == health.state:
            since = before.since if before.since is not None else health.since
        else:
            since = health.since if health.since is not None or before is None else now
        observed = _Observed(health.state, since, expect if flowing else None)
        with self._lock:
            self._observed[camera_id] = observed
        if before is None or before.state != health.state:
            self._set_gauge(camera_id, health.state)
        if before is not None and before.state != health.state:
            logger.info(
                "camera state changed",
                extra={
                    "camera_id": camera_id,
                    "state": health.state,
                    "previous": before.state,
                    "reason": health.reason,
                },
            )
        return health, since

    def _set_gauge(self, camera_id: str, state: str) -> None:
        if self.metrics is None:
            return
        for name in STATES:
            self.metrics.camera_state.labels(camera_id, name).set(1 if name == state else 0)

    def _prune(self, listed: set[str]) -> None:
        """Forget the memories of cameras the board no longer lists (bounded memory)."""
        with self._lock:
            gone = [c for c in self._observed if c not in listed]
            for camera_id in gone:
                del self._observed[camera_id]
            for memory in (self._pictures, self._noticed):
                for camera_id in [c for c in memory if c not in listed]:
                    del memory[camera_id]
        for camera_id in gone:
            self._drop_series(camera_id)

    def _drop_series(self, camera_id: str) -> None:
        if self.metrics is None:
            return
        for name in STATES:
            with contextlib.suppress(KeyError):
                self.metrics.camera_state.remove(camera_id, name)
        with contextlib.suppress(KeyError):
            self.metrics.compliance.remove(camera_id)

    # -- pictures ----------------------------------------------------------------------

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
        picture = self.latest_frames.get(camera_id, entry, self.frames_stream_of(entry))
        if entry is not None:
            with self._lock:
                self._pictures[camera_id] = (str(entry["frame_sid"]), picture is not None)
        return picture

    def _has_frame(self, camera_id: str) -> bool:
        """Whether ``latest.jpg`` answers 200 now. Once drawn, a camera's picture is kept
        (:class:`LatestFrames` keeps the previous picture when a frame is gone); a
        camera without one is tried once per new latest frame (a frame already trimmed,
        e.g. the restored state of a camera of an earlier run, gives no picture)."""
        entry = self.engine.latest(camera_id)
        if entry is None:
            return False
        with self._lock:
            known = self._pictures.get(camera_id)
        if known is not None and (known[1] or known[0] == str(entry["frame_sid"])):
            return known[1]
        try:
            return self.latest_picture(camera_id) is not None
        except CONNECTION_ERRORS:
            return False

    # -- forgetting --------------------------------------------------------------------

    def forget(self, camera_id: str, *, reason: str = "api", now: float | None = None) -> None:
        """Forget a stale camera: registry entry, stored fields, engine state, arrivals
        and metric series (its alerts stay in the history).

        Raises :class:`UnknownCameraError` for a camera the service does not know,
        :class:`CameraActiveError` for one whose node heart-beats now (or, outside the
        registry, whose detections arrived within ``online_window``), and a Redis
        connection error (nothing forgotten) when Redis is unreachable."""
        now = self.clock() if now is None else now
        beat = self.directory.heartbeat(camera_id)
        if beat is not None and beat.get("status") != "stopped":
            raise CameraActiveError(f"camera {camera_id!r} is online: its node heart-beats")
        registered = camera_id in {c["id"] for c in self.directory.all()}
        known = registered or beat is not None or bool(self.directory.known(camera_id))
        with self._lock:
            known = known or camera_id in self._observed
        arrival = self.activity.get(camera_id)
        if not (known or arrival is not None or camera_id in self.engine.camera_ids()):
            raise UnknownCameraError(camera_id)
        if not registered and arrival is not None and now - arrival.entry <= self.online_window:
            raise CameraActiveError(f"camera {camera_id!r} is active: its detections arrive")
        self.directory.forget(camera_id)
        self.engine.forget(camera_id)
        self.store.forget_camera(camera_id)
        self.activity.forget(camera_id)
        with self._lock:
            self._observed.pop(camera_id, None)
            self._pictures.pop(camera_id, None)
            self._noticed.pop(camera_id, None)
        self._drop_series(camera_id)
        if self.metrics is not None:
            self.metrics.cameras_removed.labels(reason).inc()
        logger.info(
            "camera forgotten",
            extra={"camera_id": camera_id, "reason": reason, "retention_s": self.retention},
        )

    def expire(self, now: float | None = None) -> list[str]:
        """Forget the cameras offline for longer than ``retention`` seconds (0: never);
        returns their ids. Offline since: the latest of the registry's (or stored)
        ``last_seen``, the last detections entry (arrival or capture time) and, for a
        camera with no time at all, when this board first listed it."""
        now = self.clock() if now is None else now
        if self.retention <= 0:
            return []
        expired = []
        for camera in self.cameras(now):
            if camera["state"] != OFFLINE:
                continue
            camera_id = camera["id"]
            arrival = self.activity.get(camera_id)
            last = max(
                camera["last_seen"] or 0.0,
                _number(self.directory.known(camera_id).get("last_seen")),
                arrival.entry if arrival else 0.0,
            )
            if not last:
                with self._lock:
                    last = self._noticed.setdefault(camera_id, now)
            if now - last <= self.retention:
                continue
            try:
                self.forget(camera_id, reason="retention", now=now)
            except (UnknownCameraError, CameraActiveError):
                continue
            expired.append(camera_id)
        return expired
