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
from facemask.contracts.wire import as_text

CLUSTER_SCHEME = "redis+cluster://"

__all__ = [
    "CLUSTER_SCHEME",
    "CONNECTION_ERRORS",
    "FAULT_KINDS",
    "RedisClient",
    "classify",
    "is_fault",
]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.ReadOnlyError,
    ConnectionError,
    TimeoutError,
)
"""Errors after which the same command may succeed once Redis (or the cluster) is back:
the connection, a failover in progress. Precise types only: a broad ``OSError`` (a full
disk, a bad file) is not a Redis outage. :func:`classify` tells the kinds apart."""

FAULT_KINDS = (
    "connection",
    "timeout",
    "loading",
    "nogroup",
    "oom",
    "readonly",
    "cluster",
    "busy",
    "noscript",
)
"""The Redis faults a loop survives (the bounded ``kind`` label of the error counters);
anything else is ``"other"`` (a bug or bad data, not Redis)."""

_PREFIXES = {
    "NOGROUP": "nogroup",
    "OOM": "oom",
    "READONLY": "readonly",
    "MOVED": "cluster",
    "ASK": "cluster",
    "TRYAGAIN": "cluster",
    "CLUSTERDOWN": "cluster",
    "MASTERDOWN": "cluster",
    "LOADING": "loading",
    "BUSY": "busy",
    "NOSCRIPT": "noscript",
}


def classify(exc: BaseException) -> str:
    """The kind of a Redis fault (one of :data:`FAULT_KINDS`), else ``"other"``.

    By exception type first; error replies that reach us as a plain ``ResponseError``
    (raised inside a Lua script, or in a pipeline reply) by their error code, the first
    word of the message (``-NOGROUP ...``, ``-OOM ...``), also after a script prefix.
    """
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return "loading"
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, redis.ConnectionError | ConnectionError):
        return "connection"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "oom"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "readonly"
    if isinstance(exc, redis.exceptions.NoScriptError):
        return "noscript"
    if isinstance(
        exc,
        redis.exceptions.ClusterError
        | redis.exceptions.ClusterDownError
        | redis.exceptions.TryAgainError
        | redis.exceptions.AskError
        | redis.exceptions.SlotNotCoveredError,
    ):
        return "cluster"
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        for word in _words(text):
            kind = _PREFIXES.get(word)
            if kind is not None:
                return kind
    return "other"


def _words(text: str) -> list[str]:
    """The error code candidates of a reply: its first word, and the first word after a
    script error prefix (``Error ... script: ... -OOM ...`` on older servers)."""
    words = text.split(maxsplit=1)[:1]
    for marker in ("-", "@user_script"):
        if marker in text:
            tail = text.split(marker, 1)[1].lstrip(": ").split(maxsplit=1)
            words.extend(tail[:1])
    return [w.strip(":-") for w in words]


def is_fault(exc: BaseException) -> bool:
    """True for a Redis fault a loop backs off from and retries (not a bug, not bad
    data): any kind of :func:`classify` but ``"other"``."""
    return classify(exc) != "other"


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


MAX_TOP_UPS = 4
"""Extra non-blocking reads of one :func:`read_new` for the streams that had more."""


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
    """At most ``count`` new entries (``>``) of ``keys`` for ``consumer``, blocking up to
    ``block`` seconds, shared fairly among the streams.

    Every stream is asked for an equal share of ``count`` in one XREADGROUP (at least
    one entry each, so with fewer than ``len(keys)`` to take up to ``len(keys) - 1``
    more come back). A stream that filled its share may have more: what the others left
    is asked of those in equal shares (non-blocking, a few rounds; the first ones in
    ``keys`` first, so a caller rotating ``keys`` spreads any remainder). A busy stream
    thus never takes the share of the others, and an idle one never wastes it; an idle
    poll is one blocking round trip.

    A Redis Cluster cannot serve one XREADGROUP over keys in several slots: there each
    stream is asked without blocking, and ``wait(block)`` runs when all were empty.
    """
    keys = list(keys)
    if not keys or count < 1:
        return []
    cluster = is_cluster(client)
    # Every stream is asked for the same share, at least one entry: with fewer than
    # len(keys) to take a read may return up to len(keys) - 1 more than count (as one
    # XREADGROUP over several streams always could), so a nearly full in-flight window
    # still reads every stream per round trip instead of one.
    share = max(1, count // len(keys))
    got: dict[str, list[tuple[Any, Any]]] = {}
    out = _read(client, group, consumer, keys, share, None if cluster else block)
    for stream, entries in out:
        got.setdefault(as_text(stream), []).extend(entries)
    if cluster and not out:
        wait(block)
        return []
    left = count - sum(len(e) for e in got.values())
    # Streams that filled their share may have more: what is left, in equal shares.
    candidates = [k for k in keys if len(got.get(k, [])) >= share]
    for _ in range(MAX_TOP_UPS):
        if left <= 0 or not candidates:
            break
        ways = min(len(candidates), left)
        share = left // ways
        asked = candidates[:ways]
        counts: dict[str, int] = {}
        for stream, entries in _read(client, group, consumer, asked, share, None):
            counts[as_text(stream)] = len(entries)
            got.setdefault(as_text(stream), []).extend(entries)
        left -= sum(counts.values())
        candidates = [k for k in asked if counts.get(k, 0) >= share]
    return [(key, got[key]) for key in keys if got.get(key)]


def _read(
    client: RedisClient,
    group: str,
    consumer: str,
    keys: Sequence[str],
    share: int,
    block: float | None,
) -> StreamReply:
    """Up to ``share`` new entries of each of ``keys``: one XREADGROUP on a single server
    (blocking up to ``block`` seconds when given), one per stream without blocking on a
    cluster (its keys live in several slots)."""
    redis_client: Any = client  # redis-py's stubs do not type stream replies
    if is_cluster(client):
        out: StreamReply = []
        for key in keys:
            out.extend(redis_client.xreadgroup(group, consumer, {key: ">"}, count=share) or [])
        return out
    reply = redis_client.xreadgroup(
        group,
        consumer,
        dict.fromkeys(keys, ">"),
        count=share,
        block=None if block is None else int(block * 1000),
    )
    return list(reply or [])
