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
    last_frame_ts             unix seconds (the node's clock, like last_seen) of the last
                              frame published to Redis; empty before the first one. A
                              reader compares it with last_seen (one clock, no skew) to
                              tell a node that heart-beats but publishes no frame; nodes
                              before this field have only status and frames_published

:func:`read_cameras` lists them for the other services and the dashboard; the ingest
service's ``CameraRegistry`` writes them; :func:`unregister` removes a stale camera (the
alert service's ``DELETE /api/cameras/{id}`` and its retention). Readers trust no member
of the set: an id that is not a valid camera id
(:func:`facemask.contracts.wire.validate_camera_id`) is left out, and a reader lists at
most ``limit`` cameras (the first ids in sorted order), so a hostile writer cannot make
the camera list grow without bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from facemask.contracts.streams import RedisClient, StreamLayout
from facemask.contracts.wire import as_text, is_valid_camera_id

DEFAULT_MAX_CAMERAS = 1000
"""Cameras a reader lists at most, unless it says otherwise."""


def last_frame_id(client: RedisClient, layout: StreamLayout, camera_id: str) -> int | None:
    """``last_frame_id`` of a registered camera, if its entry is still alive."""
    raw: Any = client.hget(layout.camera(camera_id), "last_frame_id")
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def registered_ids(
    client: RedisClient, layout: StreamLayout, limit: int = DEFAULT_MAX_CAMERAS
) -> tuple[list[str], int]:
    """The valid camera ids of the registry set, sorted, at most ``limit``; and the number
    of members left out (invalid ids and those beyond ``limit``)."""
    members = [as_text(m) for m in cast(Iterable[Any], client.smembers(layout.cameras))]
    ids = sorted(filter(is_valid_camera_id, members))[: max(0, limit)]
    return ids, len(members) - len(ids)


def read_cameras(
    client: RedisClient, layout: StreamLayout, limit: int = DEFAULT_MAX_CAMERAS
) -> list[dict[str, str]]:
    """Every camera ever registered (valid ids only, at most ``limit``), sorted by id, with
    ``online`` "1" or "0".

    An offline camera (its hash expired) is listed with its id only; the ``id`` field is
    always the member's id (a hash cannot claim another camera's id).
    """
    ids, _ = registered_ids(client, layout, limit)
    pipe = client.pipeline(transaction=False)  # one round trip (per node on a cluster)
    for camera_id in ids:
        pipe.hgetall(layout.camera(camera_id))
    hashes: list[Any] = cast(Any, pipe.execute()) if ids else []
    out: list[dict[str, str]] = []
    for camera_id, raw in zip(ids, hashes, strict=True):
        fields = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }
        fields["id"] = camera_id
        fields["online"] = "1" if raw else "0"
        out.append(fields)
    return out


def unregister(client: RedisClient, layout: StreamLayout, camera_id: str) -> None:
    """Remove a camera from the registry: its id leaves the set and its hash (if any) is
    deleted. A node still running the camera registers it again at its next heartbeat, so
    a reader removes only cameras that stopped heart-beating (stale cameras)."""
    pipe = client.pipeline(transaction=False)
    pipe.srem(layout.cameras, camera_id)
    pipe.delete(layout.camera(camera_id))
    pipe.execute()
