"""Camera routes: every camera's status and its latest picture."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from services.alerts.api.deps import Cameras
from services.alerts.api.models import CameraList, CameraOut, problems
from services.alerts.cameras import UnknownCameraError

router = APIRouter(tags=["cameras"])


@router.get("/api/cameras", summary="Cameras with status and compliance")
def cameras(board: Cameras) -> CameraList:
    now = board.clock()
    return CameraList(cameras=[CameraOut(**c) for c in board.cameras(now)], now=now)


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
    camera_id: Annotated[str, PathParam(min_length=1, max_length=128)],
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
