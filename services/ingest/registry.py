"""Heart-beat writer of the camera registration hashes.

The hash format is the contract in :mod:`facemask.contracts.registry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from facemask import __version__
from facemask.contracts.streams import StreamLayout
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient
from facemask.infra.worker import Worker

logger = logging.getLogger(__name__)

FieldsProvider = Callable[[], Mapping[str, Mapping[str, str]]]


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
        self.worker = Worker("registry", self._run)

    def start(self) -> None:
        """Start heart-beating (the first write happens at once)."""
        self.worker.start()

    def poke(self) -> None:
        """Write soon (a camera's status changed)."""
        self.worker.wake()

    def stop(self, *, final: bool = True) -> None:
        """Stop the thread; with ``final``, write the cameras' last state once more."""
        self.worker.stop(5.0)
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

    def _run(self, worker: Worker) -> None:
        while not worker.stopping:
            self.write()
            # A status change wakes the thread early; at most one write per 0.1 s.
            worker.wait(self.interval)
            worker.stop_event.wait(0.1)
