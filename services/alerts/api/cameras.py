"""Camera routes: the cameras' state (paged), a camera's latest picture, forgetting a
stale camera, and the pipeline's health as this service sees it.

``/api/cameras`` answers at most ``limit`` cameras (default :data:`DEFAULT_PAGE`, at most
:data:`MAX_PAGE`) sorted by id, and ``next_cursor`` (the last id of the page) while more
follow; the board itself lists at most ``max_cameras`` cameras. Camera ids in paths and
cursors must be valid camera ids (:data:`facemask.contracts.wire.CAMERA_ID_PATTERN`):
anything else is answered 422 with the rule, never 500.

``DELETE /api/cameras/{id}`` forgets a stale camera (registry entry, stored name, engine
state; its alerts stay): 204; 404 for a camera the service does not know; 409 while its
node heart-beats (it would register again at once); 503 when Redis is unreachable
(nothing forgotten); with ``?zones=true`` the zones set through the API go too. It is a
write: with a token configured it needs the token.

``/api/health`` is the pipeline's view (cameras per state, every camera not live); it
is not a probe: ``/readyz`` stays about the alert service's own ability to work, which a
stopped inference service does not take away (see the README's "Camera states").
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from facemask.infra.redisconn import CONNECTION_ERRORS
from services.alerts.api.deps import Cameras, ReadinessProbe, Zones
from services.alerts.api.models import (
    CAMERA_ID_DESCRIPTION,
    CameraId,
    CameraList,
    CameraOut,
    CameraProblem,
    PipelineHealth,
    problems,
)
from services.alerts.cameras import (
    LIVE,
    NO_FRAMES,
    NOT_ANALYSED,
    STATES,
    CameraActiveError,
    UnknownCameraError,
)

DEFAULT_PAGE = 200
MAX_PAGE = 1000

router = APIRouter(tags=["cameras"])


@router.get(
    "/api/cameras",
    summary="Cameras with status and compliance, a page at a time",
    responses=problems(422),
)
def cameras(
    board: Cameras,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = DEFAULT_PAGE,
    cursor: Annotated[
        CameraId | None,
        Query(description="next_cursor of the previous page (" + CAMERA_ID_DESCRIPTION + ")"),
    ] = None,
) -> CameraList:
    now = board.clock()
    page, more, total = board.page(now, after=cursor, limit=limit)
    return CameraList(
        cameras=[CameraOut(**c) for c in page],
        now=now,
        next_cursor=page[-1]["id"] if more and page else None,
        total=total,
    )


@router.get(
    "/api/cameras/{camera_id}/latest.jpg",
    summary="The camera's latest frame with its detections drawn",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "JPEG"},
        304: {"description": "Not modified (If-None-Match)"},
        **problems(404, 422),
    },
)
def latest(
    request: Request,
    board: Cameras,
    camera_id: Annotated[CameraId, PathParam(description=CAMERA_ID_DESCRIPTION)],
) -> Response:
    try:
        result = board.latest_picture(camera_id)
    except UnknownCameraError:
        raise HTTPException(404, f"unknown camera {camera_id!r}") from None
    if result is None:
        raise HTTPException(404, f"no frame of camera {camera_id!r} yet")
    sid, jpeg = result
    etag = f'"{sid}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(jpeg, media_type="image/jpeg", headers=headers)


@router.delete(
    "/api/cameras/{camera_id}",
    summary="Forget a stale camera (not while its node heart-beats)",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Forgotten"}, **problems(404, 409, 422, 503)},
)
def forget(
    board: Cameras,
    book: Zones,
    camera_id: Annotated[CameraId, PathParam(description=CAMERA_ID_DESCRIPTION)],
    zones: Annotated[
        bool, Query(description="also drop the camera's zones set through the API")
    ] = False,
) -> Response:
    try:
        board.forget(camera_id, reason="api")
    except UnknownCameraError:
        raise HTTPException(404, f"unknown camera {camera_id!r}") from None
    except CameraActiveError as exc:
        raise HTTPException(409, f"{exc}; stop it on its node first") from None
    except CONNECTION_ERRORS:
        raise HTTPException(503, "redis unreachable: camera not forgotten") from None
    if zones:
        book.forget(camera_id)
    return Response(status_code=204)


@router.get(
    "/api/health",
    summary="The pipeline as this service sees it: cameras per state, those not live",
)
def pipeline_health(board: Cameras, readiness: ReadinessProbe) -> PipelineHealth:
    now = board.clock()
    cameras = board.cameras(now)
    counts = dict.fromkeys(STATES, 0)
    for camera in cameras:
        counts[camera["state"]] += 1
    degraded = counts[NOT_ANALYSED] + counts[NO_FRAMES] > 0
    return PipelineHealth(
        status="degraded" if degraded else "ok",
        ready=all(readiness().values()),
        cameras=counts,  # type: ignore[arg-type]
        problems=[
            CameraProblem(
                id=c["id"],
                name=c["name"],
                state=c["state"],
                state_reason=c["state_reason"],
                state_since=c["state_since"],
            )
            for c in cameras
            if c["state"] != LIVE
        ],
        now=now,
    )
