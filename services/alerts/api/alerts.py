"""Alert routes: the history (filters, pages), one alert with its deliveries, pictures,
its review (acknowledged, confirmed, false positive: who, when, the true label)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from services.alerts.api.deps import Clock, Hub, Snapshots, Store
from services.alerts.api.models import (
    CAMERA_ID_DESCRIPTION,
    AlertDetail,
    AlertOut,
    AlertPage,
    CameraId,
    ReviewIn,
    problems,
)
from services.alerts.hub import ReviewChange
from services.alerts.records import AlertRecord
from services.alerts.snapshots import SnapshotStore
from services.alerts.store import AlertStore, CursorError

logger = logging.getLogger(__name__)

ALERT_ID = r"^[0-9a-f]{32}$"
MAX_LIMIT = 500
"""Latest alert time a cursor may name (the year 5138): beyond, it is no cursor of ours."""

router = APIRouter(tags=["alerts"])

AlertId = Annotated[str, PathParam(pattern=ALERT_ID)]


def parse_time(name: str, raw: str | None) -> float | None:
    """ISO-8601 or unix seconds -> unix seconds; HTTP 400 with a clear message otherwise."""
    if raw is None or raw == "":
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise HTTPException(
                400,
                f"{name}: expected an ISO-8601 time (e.g. 2024-05-01T12:00:00Z) or unix "
                f"seconds, got {raw[:64]!r}",
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value) or value < 0:
        raise HTTPException(400, f"{name}: unix seconds must be a finite number >= 0")
    return value


@router.get("/api/alerts", summary="Alert history, newest first", responses=problems(400, 422))
def alerts(
    store: Store,
    camera_id: Annotated[
        CameraId | None, Query(description="only this camera: " + CAMERA_ID_DESCRIPTION)
    ] = None,
    since: Annotated[
        str | None, Query(description="from this time (ISO-8601 or unix seconds)")
    ] = None,
    until: Annotated[
        str | None, Query(description="before this time (ISO-8601 or unix seconds)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
    state: Annotated[
        Literal["new", "acknowledged", "confirmed", "false_positive", "reviewed"] | None,
        Query(
            description="only alerts in this review state (reviewed: confirmed or false_positive)"
        ),
    ] = None,
) -> AlertPage:
    t0, t1 = parse_time("since", since), parse_time("until", until)
    if t0 is not None and t1 is not None and t0 > t1:
        raise HTTPException(400, "since must not be after until")
    try:
        records, next_cursor = store.list_alerts(
            camera_id=camera_id, since=t0, until=t1, limit=limit, cursor=cursor, state=state
        )
    except CursorError as exc:
        raise HTTPException(400, f"cursor: {exc}") from None
    return AlertPage(
        alerts=[AlertOut.of(r) for r in records], next_cursor=next_cursor, count=len(records)
    )


def _alert(store: AlertStore, alert_id: str) -> AlertRecord:
    record = store.get_alert(alert_id)
    if record is None:
        raise HTTPException(404, f"alert {alert_id!r} not found")
    return record


@router.get(
    "/api/alerts/{alert_id}",
    summary="One alert and its deliveries",
    responses=problems(404, 422),
)
def alert(store: Store, alert_id: AlertId) -> AlertDetail:
    record = _alert(store, alert_id)
    return AlertDetail.with_deliveries(record, store.deliveries(alert_id))


# --- review (issue 14) ---


@router.post(
    "/api/alerts/{alert_id}/review",
    summary="Review an alert: acknowledge, confirm, mark false positive, or back to new",
    responses=problems(404, 422),
)
def review(store: Store, hub: Hub, clock: Clock, alert_id: AlertId, body: ReviewIn) -> AlertDetail:
    record = store.review(
        alert_id, body.state, by=body.by, at=clock(), note=body.note, label=body.label
    )
    if record is None:
        raise HTTPException(404, f"alert {alert_id!r} not found")
    logger.info(
        "alert reviewed",
        extra={
            "alert_id": alert_id,
            "camera_id": record.camera_id,
            "state": body.state,
            "label": record.review.label,
            "by": body.by,
        },
    )
    hub.publish(ReviewChange(record))
    return AlertDetail.with_deliveries(record, store.deliveries(alert_id))


# --- end review ---

Picture = Literal["snapshot", "thumbnail", "frame"]


def _picture(
    store: AlertStore, snapshots: SnapshotStore, alert_id: str, which: Picture
) -> FileResponse:
    record = _alert(store, alert_id)
    pictures = {"snapshot": record.snapshot, "thumbnail": record.thumbnail, "frame": record.frame}
    relative = pictures[which]
    what = "clean frame" if which == "frame" else "snapshot"
    if relative is None:
        raise HTTPException(
            404,
            f"alert {alert_id!r} has no {what}: its frame had left the frame stream (or did "
            "not decode) before the alert was processed",
        )
    path = snapshots.path(relative)
    if path is None:
        raise HTTPException(404, f"the {what} of alert {alert_id!r} was deleted (retention)")
    media = "image/png" if path.suffix == ".png" else "image/jpeg"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=86400"})


JPEG_RESPONSES = {
    200: {"content": {"image/jpeg": {}}, "description": "JPEG"},
    **problems(404, 422),
}


@router.get(
    "/api/alerts/{alert_id}/snapshot.jpg",
    summary="The alert's annotated frame",
    response_class=FileResponse,
    responses=JPEG_RESPONSES,
)
def snapshot(store: Store, snapshots: Snapshots, alert_id: AlertId) -> FileResponse:
    return _picture(store, snapshots, alert_id, "snapshot")


@router.get(
    "/api/alerts/{alert_id}/thumbnail.jpg",
    summary="The alert's annotated frame, 320 px wide",
    response_class=FileResponse,
    responses=JPEG_RESPONSES,
)
def thumbnail(store: Store, snapshots: Snapshots, alert_id: AlertId) -> FileResponse:
    return _picture(store, snapshots, alert_id, "thumbnail")


@router.get(
    "/api/alerts/{alert_id}/frame.jpg",
    summary="The alert's clean frame, as the camera sent it (PNG for a PNG frame)",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the frame"},
        **problems(404, 422),
    },
)
def frame(store: Store, snapshots: Snapshots, alert_id: AlertId) -> FileResponse:
    return _picture(store, snapshots, alert_id, "frame")
