"""Camera routes: the cameras' status (paged) and a camera's latest picture.

``/api/cameras`` answers at most ``limit`` cameras (default :data:`DEFAULT_PAGE`, at most
:data:`MAX_PAGE`) sorted by id, and ``next_cursor`` (the last id of the page) while more
follow; the board itself lists at most ``max_cameras`` cameras. Camera ids in paths and
cursors must be valid camera ids (:data:`facemask.contracts.wire.CAMERA_ID_PATTERN`):
anything else is answered 422 with the rule, never 500.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from services.alerts.api.deps import Cameras
from services.alerts.api.models import (
    CAMERA_ID_DESCRIPTION,
    CameraId,
    CameraList,
    CameraOut,
    problems,
)
from services.alerts.cameras import UnknownCameraError

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
