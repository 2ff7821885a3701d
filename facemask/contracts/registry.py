"""Camera registration: the contract between an ingest node and every reader of cameras.

Per camera, hash ``facemask:camera:<id>`` (``StreamLayout.camera``) with a TTL of
``camera_ttl`` seconds, refreshed every ``heartbeat_interval`` seconds and at once when
the camera's status changes; the id is added to the set ``facemask:cameras``. A camera
whose hash is gone has been offline for longer than the TTL (its node died or lost
Redis); one whose ``status`` is not ``up`` is online but has no picture. Fields (all
strings)::

    id, name, location        from the config (name defaults to the id)
    source_kind, source       device | file | url | images; the source, password masked
    fps, quality              configured frame-rate cap and JPEG quality
    width, height, resolution size of the published frames ("960x506"), empty before one
    status                    starting | up | reconnecting | ended | stopped
    last_error, failures      last source error, number of source failures
    stream, partition         the frame stream the camera publishes to
    node, version             ingest node name and facemask version
    started, last_seen        unix seconds
    last_frame_id             last frame id published (seeds the next process's ids)
    frames_published          frames published by this process

:func:`read_cameras` lists them for the other services and the dashboard; the ingest
service's ``CameraRegistry`` writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from facemask.contracts.streams import RedisClient, StreamLayout


def last_frame_id(client: RedisClient, layout: StreamLayout, camera_id: str) -> int | None:
    """``last_frame_id`` of a registered camera, if its entry is still alive."""
    raw: Any = client.hget(layout.camera(camera_id), "last_frame_id")
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def read_cameras(client: RedisClient, layout: StreamLayout) -> list[dict[str, str]]:
    """Every camera ever registered, sorted by id, with ``online`` "1" or "0".

    An offline camera (its hash expired) is listed with its id only.
    """
    members: Iterable[Any] = cast(Any, client.smembers(layout.cameras))
    ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    out: list[dict[str, str]] = []
    for camera_id in ids:
        raw: dict[Any, Any] = cast(Any, client.hgetall(layout.camera(camera_id)))
        fields = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }
        fields.setdefault("id", camera_id)
        fields["online"] = "1" if raw else "0"
        out.append(fields)
    return out
