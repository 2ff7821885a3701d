"""Redis key layout shared by every service.

Frames are spread over ``partitions`` streams; a camera always maps to the same
partition (``crc32(camera_id) % partitions``), so its frames stay in order. Every key of
one partition carries the same Redis Cluster hash tag (``{p3}``), so the frame stream,
the detections stream and the dead-letter stream of a partition live in one slot: the
inference service can publish a detection and ``XACK`` its frame in one Lua script
(atomic: no duplicate detections, even across a crash), and the alert service can
fetch the frame of a detection by id from the same node. Partitions spread across the
masters of a cluster; a single Redis holds them all. A new camera needs no set-up: its
frames land in an existing partition that every inference replica already reads.

Keys (prefix ``facemask`` by default)::

    facemask:{p<k>}:frames       frame stream of partition k (ingest XADD, MAXLEN ~)
    facemask:{p<k>}:detections   one entry per frame (inference XADD, MAXLEN ~)
    facemask:{p<k>}:deadletter   undecodable / poisoned frames with a reason
    facemask:alerts              alert events (alert service; voice prompt listens)
    facemask:cameras             set of known camera ids
    facemask:camera:<id>         hash: camera registration, expires without heartbeat
    facemask:meta                hash: layout facts every service checks (partitions)
    facemask:model:active        JSON: the model version promoted for the cluster
    facemask:model:events        pub/sub channel: the same JSON on every change
    facemask:model:blob:<v>      hash {file name: bytes}: the files of version v
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

RedisClient = redis.Redis | RedisCluster
"""A client of a single Redis or of a Redis Cluster: every key below works on both."""

DEFAULT_PREFIX = "facemask"
DEFAULT_PARTITIONS = 4


class LayoutMismatchError(RuntimeError):
    """Services disagree on the stream layout (for example the partition count)."""


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """Names of every Redis key the services share."""

    prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if not self.prefix or any(c in self.prefix for c in "{} \n"):
            raise ValueError(f"invalid key prefix {self.prefix!r}")

    def partition_of(self, camera_id: str) -> int:
        """Stable partition of a camera (crc32, same in every language)."""
        return zlib.crc32(camera_id.encode("utf-8")) % self.partitions

    def _tagged(self, partition: int, name: str) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} outside 0..{self.partitions - 1}")
        return f"{self.prefix}:{{p{partition}}}:{name}"

    def every_partition(self, name: str) -> str:
        """A glob matching the ``name`` key of every partition (``prefix:{p*}:name``),
        e.g. for Redis ACL key patterns."""
        return f"{self.prefix}:{{p*}}:{name}"

    def frames(self, partition: int) -> str:
        """Frame stream of a partition."""
        return self._tagged(partition, "frames")

    def detections(self, partition: int) -> str:
        """Detections stream of a partition."""
        return self._tagged(partition, "detections")

    def deadletter(self, partition: int) -> str:
        """Dead-letter stream of a partition."""
        return self._tagged(partition, "deadletter")

    def frames_for(self, camera_id: str) -> str:
        """Frame stream a camera publishes to."""
        return self.frames(self.partition_of(camera_id))

    def all_frames(self) -> list[str]:
        """Every frame stream."""
        return [self.frames(p) for p in range(self.partitions)]

    def all_detections(self) -> list[str]:
        """Every detections stream."""
        return [self.detections(p) for p in range(self.partitions)]

    def partition_of_key(self, key: str) -> int:
        """Partition number of one of this layout's partitioned keys."""
        start = key.index("{p") + 2
        return int(key[start : key.index("}", start)])

    @property
    def alerts(self) -> str:
        """Alert events stream."""
        return f"{self.prefix}:alerts"

    @property
    def alerts_deadletter(self) -> str:
        """Dead letters of the alert service (malformed detections entries)."""
        return f"{self.prefix}:alerts:deadletter"

    @property
    def cameras(self) -> str:
        """Set of camera ids ever registered."""
        return f"{self.prefix}:cameras"

    def camera(self, camera_id: str) -> str:
        """Registration hash of a camera (expires when its node stops heart-beating)."""
        return f"{self.prefix}:camera:{camera_id}"

    @property
    def meta(self) -> str:
        """Hash of layout facts (``partitions``) checked by every service at start."""
        return f"{self.prefix}:meta"

    @property
    def model_active(self) -> str:
        """JSON of the model version promoted for the cluster (``facemask.infra.rollout``)."""
        return f"{self.prefix}:model:active"

    @property
    def model_events(self) -> str:
        """Pub/sub channel announcing every change of :attr:`model_active`."""
        return f"{self.prefix}:model:events"

    def model_blob(self, version: str) -> str:
        """Hash holding the files of a model version (replicas download them from it)."""
        return f"{self.prefix}:model:blob:{version}"

    @property
    def model_keys(self) -> str:
        """A glob matching every model key (for Redis ACL key patterns)."""
        return f"{self.prefix}:model:*"

    def check_meta(self, client: RedisClient) -> None:
        """Record this layout in Redis, or fail when another service uses a different one.

        ``client`` is a ``redis.Redis`` (or cluster) client.
        """
        client.hsetnx(self.meta, "partitions", str(self.partitions))
        stored = client.hget(self.meta, "partitions")
        if stored is not None and int(stored) != self.partitions:
            raise LayoutMismatchError(
                f"Redis says the stream layout has {int(stored)} partitions but this service "
                f"is configured with {self.partitions}; set FACEMASK_STREAM_PARTITIONS="
                f"{int(stored)} on every service (or delete {self.meta} on a fresh system)"
            )
