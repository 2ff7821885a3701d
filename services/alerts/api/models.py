"""Response models of the HTTP API: the OpenAPI schema of every JSON answer.

The live feed (``/api/events``) sends the same :class:`AlertOut` documents as the alert
history, so the dashboard renders both with one function.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from facemask.contracts.wire import CAMERA_ID_PATTERN, WireError, validate_camera_id
from services.alerts.records import REVIEW_LABELS, AlertRecord
from services.alerts.store import Delivery
from services.alerts.zones import ZoneSource, ZoneSpec

# -- errors ------------------------------------------------------------------------------


class ValidationProblem(BaseModel):
    """One invalid parameter."""

    loc: list[str | int] = Field(description="where: e.g. ['query', 'limit']")
    msg: str
    type: str


class Problem(BaseModel):
    """Any 4xx / 5xx answer: ``detail`` for programs, ``message`` for people."""

    detail: str | list[ValidationProblem]
    message: str


PROBLEM_DESCRIPTIONS = {
    400: "Bad parameter (time, cursor, Last-Event-ID)",
    401: "Missing or invalid token",
    404: "Not found",
    409: "Conflict with the current state (e.g. the camera is online)",
    422: "Invalid parameter",
    503: "A dependency is unavailable (e.g. Redis unreachable); try again",
}


def _camera_id(value: str) -> str:
    try:
        return validate_camera_id(value)
    except WireError as exc:
        raise ValueError(exc.detail) from None


CameraId = Annotated[str, AfterValidator(_camera_id)]
"""A camera id parameter: invalid ids are answered 422 with the rule (``CAMERA_ID_PATTERN``)."""
CAMERA_ID_DESCRIPTION = f"camera id ({CAMERA_ID_PATTERN})"


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route or router that answers these error codes."""
    return {code: {"model": Problem, "description": PROBLEM_DESCRIPTIONS[code]} for code in codes}


# -- health ------------------------------------------------------------------------------


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class ReadinessChecks(BaseModel):
    """The checks behind readiness."""

    redis: bool = Field(description="Redis answers PING")
    consumer: bool = Field(description="the detections consumer runs and has its groups")
    http: bool = Field(description="the HTTP server started")
    supervisor: bool = Field(
        True,
        description="no fatal supervisor verdict, every background loop runs, the detections "
        "make progress (no stall)",
    )


class Readiness(BaseModel):
    """Readiness (HTTP 200 when ready, 503 otherwise)."""

    ready: bool
    checks: ReadinessChecks


# -- alerts ------------------------------------------------------------------------------


class RuleOut(BaseModel):
    """Thresholds of the alert rule."""

    k: int = Field(description="no_mask frames needed among the last n")
    n: int = Field(description="window of a track's last n frames")
    min_score: float = Field(description="no_mask score that counts")
    min_face: int = Field(description="smaller face side (px) that counts")
    cooldown: float = Field(description="seconds between two alerts of one person track")
    group_window: float = Field(
        description="seconds: violators starting within it share one alert (0: off)"
    )


class DetectionOut(BaseModel):
    """One face of the alert's frame."""

    label: Literal["mask", "no_mask"]
    score: float
    box: list[int] = Field(description="[x1, y1, x2, y2] in pixels of the frame")


# --- review (issue 14) ---


class ReviewOut(BaseModel):
    """What a person said about the alert."""

    state: Literal["new", "acknowledged", "confirmed", "false_positive"]
    by: str | None = Field(description="who reviewed it last (None: never reviewed)")
    at: float | None = Field(description="when (unix seconds, the server's clock)")
    note: str
    label: Literal["mask", "no_mask", "none"] | None = Field(
        description="the violator's true label: no_mask (confirmed), mask or none (false "
        "positive; none: not a person's face, e.g. a poster), None otherwise"
    )


REVIEWER_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class ReviewIn(BaseModel):
    """A review of an alert (``POST /api/alerts/{alert_id}/review``)."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["new", "acknowledged", "confirmed", "false_positive"]
    by: str = Field("api", min_length=1, max_length=64, pattern=REVIEWER_PATTERN, description="who")
    note: str = Field("", max_length=500)
    label: Literal["mask", "no_mask", "none"] | None = Field(
        None,
        description="false_positive: the violator's true label, mask (default) or none (not "
        "a person's face); confirmed: no_mask (default); no label for the other states",
    )

    @model_validator(mode="after")
    def _label_fits_state(self) -> ReviewIn:
        allowed = REVIEW_LABELS[self.state]
        if self.label is not None and self.label not in allowed:
            takes = f"one of {', '.join(allowed)}" if allowed else "no label"
            raise ValueError(f"state {self.state} takes {takes}, not {self.label!r}")
        return self


# --- end review ---


class AlertOut(BaseModel):
    """One alert (also the data of each ``alert`` server-sent event)."""

    id: str = Field(description="32 hex digits, the same on every sink")
    seq: int = Field(description="storage order; the SSE event id")
    camera_id: str
    camera_name: str
    place: str
    ts: float = Field(description="capture time of the frame (unix seconds)")
    time: str = Field(description="ts as ISO-8601 UTC")
    kind: str
    message: str
    frame_id: int
    frame_sid: str
    track_id: int
    score: float
    box: list[int] = Field(description="[x1, y1, x2, y2] of the unmasked face")
    width: int
    height: int
    detections: list[DetectionOut]
    has_snapshot: bool
    rule: RuleOut | dict[str, Any] = Field(description="the camera's rule when it alerted")
    violators: int = Field(
        1, description="people this alert names (more than 1: merged by the grouping window)"
    )
    track_ids: list[int] = Field(
        default_factory=list, description="their person tracks (track_id, the one of box, first)"
    )
    snapshot_url: str | None = Field(description="the annotated frame (None: no snapshot)")
    thumbnail_url: str | None
    # --- review (issue 14) ---
    frame_url: str | None = Field(description="the clean frame (None: not kept)")
    review: ReviewOut
    # --- end review ---

    @staticmethod
    def fields_of(record: AlertRecord) -> dict[str, Any]:
        """The alert's fields: :meth:`AlertRecord.to_json` plus the picture URLs."""
        base = f"/api/alerts/{record.alert_id}"
        return {
            **record.to_json(),
            "snapshot_url": f"{base}/snapshot.jpg" if record.snapshot else None,
            "thumbnail_url": f"{base}/thumbnail.jpg" if record.thumbnail else None,
            "frame_url": f"{base}/frame.jpg" if record.frame else None,
            "review": record.review.to_json(),
        }

    @classmethod
    def of(cls, record: AlertRecord) -> AlertOut:
        """The API's view of a stored alert."""
        return cls(**cls.fields_of(record))


class AlertPage(BaseModel):
    """A page of the alert history, newest first."""

    alerts: list[AlertOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page")
    count: int


class DeliveryOut(BaseModel):
    """The delivery of an alert to one sink."""

    sink: str
    status: Literal["pending", "delivered", "failed", "expired"]
    attempts: int
    last_error: str
    next_attempt: float | None = Field(description="when it is tried again (pending only)")
    done_at: float | None

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        """The API's view of an outbox row."""
        return cls.model_validate(
            {
                "sink": delivery.sink,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "last_error": delivery.last_error,
                "next_attempt": delivery.next_attempt if delivery.status == "pending" else None,
                "done_at": delivery.done_at,
            }
        )


class AlertDetail(AlertOut):
    """One alert and its deliveries."""

    deliveries: list[DeliveryOut]

    @classmethod
    def with_deliveries(cls, record: AlertRecord, deliveries: list[Delivery]) -> AlertDetail:
        """An alert with its outbox rows."""
        return cls(**AlertOut.fields_of(record), deliveries=[DeliveryOut.of(d) for d in deliveries])


# --- camera health (H3) ----------------------------------------------------------------

CameraState = Literal["live", "not_analysed", "no_frames", "offline"]
"""A camera's state (services.alerts.cameras.STATES)."""


class CameraProblem(BaseModel):
    """A camera that is not live."""

    id: str
    name: str
    state: CameraState
    state_reason: str
    state_since: float | None


class PipelineHealth(BaseModel):
    """The pipeline as this service sees it (not a probe: /readyz is the service's own)."""

    status: Literal["ok", "degraded"] = Field(
        description="degraded: a camera heart-beats but is not live (no_frames, "
        "not_analysed); offline cameras are counted but do not degrade"
    )
    ready: bool = Field(description="the alert service itself is ready (as /readyz)")
    cameras: dict[CameraState, int] = Field(description="cameras per state")
    problems: list[CameraProblem] = Field(description="every camera not live, by id")
    now: float


# -- cameras -----------------------------------------------------------------------------


class CameraOut(BaseModel):
    """One camera: registry facts, the engine's statistics and its state."""

    id: str
    name: str = Field(description="the registry's name (ingest config), else the id")
    location: str
    status: str = Field(
        description="the node's status (up, reconnecting, ...) or offline (compatibility: "
        "see state)"
    )
    online: bool = Field(description="frames arrive: state live or not_analysed")
    state: CameraState = Field(
        description="live: frames arrive and detections follow; not_analysed: frames arrive "
        "but no detections for analysis_timeout; no_frames: the node heart-beats but "
        "publishes no frame; offline: no heartbeat"
    )
    state_reason: str = Field(
        description="why, for people (no_frames: the node's last_error when it has one)"
    )
    state_since: float | None = Field(
        description="when the state (or its cause) began, unix seconds; null: unknown"
    )
    has_frame: bool = Field(
        description="whether latest.jpg answers 200 now (poll it only while true)"
    )
    last_seen: float | None
    last_frame_ts: float | None
    fps: float = Field(description="detections entries per second, measured")
    configured_fps: float | None
    resolution: str
    node: str
    last_error: str
    compliance: float | None = Field(description="masked / all faces over window_s")
    masked: int
    faces: int
    tracks: int
    last_alert_ts: float | None
    window_s: float
    alerts_24h: int
    rule: RuleOut


class CameraList(BaseModel):
    """A page of the cameras known to the registry or seen in the detections, by id."""

    cameras: list[CameraOut]
    now: float = Field(description="the server's time of the statistics")
    next_cursor: str | None = Field(
        None, description="pass as cursor for the next page (None: this is the last page)"
    )
    total: int = Field(0, description="cameras listed in all pages")


# -- dashboard ---------------------------------------------------------------------------


class DashboardConfig(BaseModel):
    """Settings the dashboard needs."""

    version: str
    compliance_window_s: float
    latest_interval_s: float = Field(description="how often to reload the latest pictures")
    auth: bool = Field(description="whether the API needs a token")


# --- zones ---


class ZonesOut(ZoneSpec):
    """A camera's ignore masks and include zones, and where they come from."""

    camera_id: str
    source: ZoneSource = Field(
        description="api: set through the API (stored), config: the zones setting, none"
    )
