"""Redis connections for every service: one server or a Redis Cluster.

``redis://host:port/db`` (or ``rediss://``) connects to one server;
``redis+cluster://host:port`` to a cluster (any node as the seed). Clients are created
with timeouts and retry-on-timeout so a Redis restart turns into errors the services
catch and retry, never a hang.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

CLUSTER_SCHEME = "redis+cluster://"

RedisClient = redis.Redis | RedisCluster

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
