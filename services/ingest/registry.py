"""Camera registry: each camera announces itself in Redis and heart-beats.

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

:func:`read_cameras` lists them for the other services and the dashboard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from facemask import __version__
from facemask.redisconn import CONNECTION_ERRORS, RedisClient
from facemask.streams import StreamLayout

logger = logging.getLogger(__name__)

FieldsProvider = Callable[[], Mapping[str, Mapping[str, str]]]


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


class CameraRegistry:
    """Heart-beat thread writing every camera's hash; best effort while Redis is down."""

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        provider: FieldsProvider,
        *,
        node: str,
        interval: float,
        ttl: int,
    ) -> None:
        self.client = client
        self.layout = layout
        self.provider = provider
        self.node = node
        self.interval = interval
        self.ttl = ttl
        self.writes = 0
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry", daemon=True)

    def start(self) -> None:
        """Start heart-beating (the first write happens at once)."""
        self._thread.start()

    def poke(self) -> None:
        """Write soon (a camera's status changed)."""
        self._poke.set()

    def stop(self, *, final: bool = True) -> None:
        """Stop the thread; with ``final``, write the cameras' last state once more."""
        self._stop.set()
        self._poke.set()
        self._thread.join(5.0)
        if final:
            self.write()

    def write(self) -> bool:
        """Write every camera's hash now; False when Redis is unreachable."""
        now = f"{time.time():.3f}"
        try:
            pipe = self.client.pipeline(transaction=False)
            for camera_id, fields in self.provider().items():
                key = self.layout.camera(camera_id)
                mapping: dict[Any, Any] = {
                    **fields,
                    "node": self.node,
                    "version": __version__,
                    "last_seen": now,
                }
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, self.ttl)
                pipe.sadd(self.layout.cameras, camera_id)
            pipe.execute()
        except CONNECTION_ERRORS as exc:
            logger.debug("registry not written: redis unreachable", extra={"error": str(exc)})
            return False
        except Exception as exc:
            logger.warning("registry not written", extra={"error": str(exc)})
            return False
        self.writes += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.clear()
            self.write()
            # A status change wakes the thread early; at most one write per 0.1 s.
            self._poke.wait(self.interval)
            self._stop.wait(0.1)
