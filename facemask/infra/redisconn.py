"""Redis connections for every service: one server or a Redis Cluster.

``redis://host:port/db`` (or ``rediss://``) connects to one server;
``redis+cluster://host:port`` to a cluster (any node as the seed). Clients are created
with timeouts and retry-on-timeout so a Redis restart turns into errors the services
catch and retry, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from facemask.contracts.streams import RedisClient

CLUSTER_SCHEME = "redis+cluster://"

__all__ = ["CLUSTER_SCHEME", "CONNECTION_ERRORS", "RedisClient"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    OSError,
)


def connect(
    url: str,
    *,
    socket_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    decode_responses: bool = False,
    **kwargs: Any,
) -> RedisClient:
    """A client for ``url`` (a single server or, with ``redis+cluster://``, a cluster)."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "decode_responses": decode_responses,
        "health_check_interval": 15,
        **kwargs,
    }
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], **common)
    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2), **common
    )


def is_cluster(client: RedisClient) -> bool:
    """True for a cluster client."""
    return isinstance(client, RedisCluster)


StreamReply = list[tuple[Any, list[tuple[Any, Any]]]]
"""An XREADGROUP reply: ``[(stream, [(id, fields), ...]), ...]``."""


def ensure_groups(client: RedisClient, keys: Sequence[str], group: str, start_id: str) -> None:
    """Create the consumer group ``group`` on each stream (and the stream), starting at
    ``start_id``; a group that exists already is left as it is."""
    for key in keys:
        try:
            client.xgroup_create(key, group, id=start_id, mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def read_new(
    client: RedisClient,
    group: str,
    consumer: str,
    keys: Sequence[str],
    *,
    count: int,
    block: float,
    wait: Callable[[float], object] = time.sleep,
) -> StreamReply:
    """New entries (``>``) of ``keys`` for ``consumer``, blocking up to ``block`` seconds.

    A Redis Cluster cannot serve one XREADGROUP over keys in several slots: there each
    stream is asked without blocking, and ``wait(block)`` runs when all were empty.
    """
    redis_client: Any = client  # redis-py's stubs do not type stream replies
    if not is_cluster(client):
        streams = dict.fromkeys(keys, ">")
        reply: StreamReply = redis_client.xreadgroup(
            group, consumer, streams, count=count, block=int(block * 1000)
        )
        return reply or []
    out: StreamReply = []
    for key in keys:
        out.extend(redis_client.xreadgroup(group, consumer, {key: ">"}, count=count) or [])
    if not out:
        wait(block)
    return out
