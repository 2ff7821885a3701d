"""Zone routes: a camera's ignore masks and include zones (:mod:`services.alerts.zones`).

``GET /api/cameras/{camera_id}/zones`` answers the zones in effect and where they come
from (``api``: set here and stored, ``config``: the ``zones`` setting, ``none``);
``PUT`` replaces them (effective for the camera's next detections entry, stored in
SQLite, so they survive a restart and replace the configured ones; an empty body clears
them, configured ones included). Polygons are frame-relative (x, y in [0, 1] of the
frame's width and height); a body with fewer than 3 or more than 64 points in a polygon,
a coordinate outside [0, 1], more than 32 polygons in a list, a bad or repeated name, or
an unknown key is answered 422. ``DELETE`` drops the zones set here (the configured
ones, if any, apply again) and answers the zones then in effect. Like every write, PUT
and DELETE need the token when one is set.
A camera need not have sent a frame yet: zones can be prepared before it starts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam

from services.alerts.api.deps import Zones
from services.alerts.api.models import CAMERA_ID_DESCRIPTION, CameraId, ZonesOut, problems
from services.alerts.zones import CameraZones, ZoneSpec

router = APIRouter(tags=["zones"])

CameraPath = Annotated[CameraId, PathParam(description=CAMERA_ID_DESCRIPTION)]


def _out(camera_id: str, zones: CameraZones) -> ZonesOut:
    return ZonesOut(camera_id=camera_id, source=zones.source, **zones.spec.model_dump())


@router.get(
    "/api/cameras/{camera_id}/zones",
    summary="The camera's ignore masks and include zones",
    responses=problems(422),
)
def get_zones(book: Zones, camera_id: CameraPath) -> ZonesOut:
    return _out(camera_id, book.get(camera_id))


@router.put(
    "/api/cameras/{camera_id}/zones",
    summary="Replace the camera's ignore masks and include zones (stored)",
    responses=problems(422),
)
def put_zones(book: Zones, camera_id: CameraPath, body: ZoneSpec) -> ZonesOut:
    return _out(camera_id, book.set(camera_id, body))


@router.delete(
    "/api/cameras/{camera_id}/zones",
    summary="Drop the zones set through the API (the configured ones apply again)",
    responses=problems(422),
)
def delete_zones(book: Zones, camera_id: CameraPath) -> ZonesOut:
    book.forget(camera_id)
    return _out(camera_id, book.get(camera_id))
