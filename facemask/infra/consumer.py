"""Redis Streams consumer groups: the machinery every stream consumer of the services shares.

A :class:`StreamGroupConsumer` reads the streams ``keys`` as consumer ``consumer`` of the
group ``group`` and hands each batch of entries (:class:`Delivery`) to the service's
handler. One thread (a :class:`~facemask.infra.worker.Worker`) runs the loop:

1. create the group on every stream (``XGROUP CREATE ... MKSTREAM`` at ``start_id``;
   an existing group is kept) at start, after a connection error and after a ``NOGROUP``
   error (the stream or the group was deleted);
2. every ``claim_interval`` seconds take over the entries that idled ``claim_idle``
   seconds in any consumer of the group (``XAUTOCLAIM``; a full batch means more are
   waiting, so the next pass claims again);
3. otherwise read: with ``read_pending``, this consumer's own pending entries first
   (``XREADGROUP`` id ``0``: read before a restart, or before :meth:`rewind` after a
   failed batch), then new entries (``>``; on a Redis Cluster stream by stream, see
   :func:`~facemask.infra.redisconn.read_new`);
4. ``handler(batch)``.

Bounded redeliveries: an entry already delivered ``max_deliveries`` times (a consumer
crashed on it, or its batch kept failing) is not handed out for processing once more: it
comes in the batch with :attr:`Delivery.rejected` set to ``("max_deliveries", detail)``
and the handler dead-letters it (:meth:`deadletter` writes
:func:`~facemask.contracts.wire.deadletter_record` entries) instead of processing it.

Failures: a connection error, a ``NOGROUP`` or an exception of the handler is logged and
passed to ``on_error`` (metrics, rolling back a batch), and the loop backs off
(:class:`~facemask.infra.backoff.Backoff`, reset by the next success). Acknowledging is
the handler's business (:meth:`ack`, or the service's own script), so a service decides
when an entry is done: after its commit, atomically with its output.

With ``max_inflight``, at most that many entries are read and not yet :meth:`done`: the
handler may finish them later on other threads (a backlog stays in Redis, not in memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from facemask.contracts.wire import as_text, deadletter_record
from facemask.infra.backoff import Backoff
from facemask.infra.redisconn import (
    CONNECTION_ERRORS,
    RedisClient,
    StreamReply,
    ensure_groups,
    is_cluster,
    read_new,
)
from facemask.infra.worker import Worker

logger = logging.getLogger(__name__)

MAX_DELIVERIES_REASON = "max_deliveries"
PENDING_SCAN = 100
"""Pending entries looked at per stream and sweep for the bounded-redeliveries check."""


class GroupSettings(Protocol):
    """The consumer-group settings every stream-consuming service has."""

    consumer_group: str
    consumer_name: str
    read_count: int
    read_block: float
    claim_idle: float
    claim_interval: float
    max_deliveries: int


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """How a :class:`StreamGroupConsumer` reads (see the module docstring)."""

    group: str
    consumer: str
    start_id: str = "$"
    """Where a group created by this consumer starts: ``$`` (new entries) or ``0``."""
    read_count: int = 100
    read_block: float = 1.0
    claim_idle: float = 60.0
    claim_interval: float = 10.0
    max_deliveries: int = 5
    read_pending: bool = True
    """Read this consumer's own pending entries (id ``0``) before new ones."""
    max_inflight: int | None = None
    """Entries read and not yet :meth:`StreamGroupConsumer.done`; None: no limit (the
    handler finishes its batch before it returns)."""

    @classmethod
    def from_settings(cls, settings: GroupSettings, **overrides: Any) -> GroupOptions:
        """The options a service's settings name (the same field names in every service),
        with ``overrides`` (``start_id``, ``read_pending``, ``max_inflight``)."""
        return cls(
            group=settings.consumer_group,
            consumer=settings.consumer_name,
            read_count=settings.read_count,
            read_block=settings.read_block,
            claim_idle=settings.claim_idle,
            claim_interval=settings.claim_interval,
            max_deliveries=settings.max_deliveries,
            **overrides,
        )

    def __post_init__(self) -> None:
        if self.read_count < 1 or self.max_deliveries < 1:
            raise ValueError("read_count and max_deliveries must be >= 1")
        if self.max_inflight is not None and self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")


@dataclass(slots=True)
class Delivery:
    """One entry delivered to this consumer."""

    stream: str
    sid: str
    fields: Mapping[Any, Any] | None
    """The entry's fields; None when it was deleted (trimmed) while pending."""
    reclaimed: bool = False
    """Taken over from an idle consumer (``XAUTOCLAIM``)."""
    rejected: tuple[str, str] | None = None
    """``(reason, detail)`` when it must be dead-lettered, not processed."""


def stream_id(sid: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a sortable pair."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def is_nogroup(exc: BaseException) -> bool:
    """True for Redis' "no such key or consumer group" error."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP")


Handler = Callable[[list[Delivery]], object]


class StreamGroupConsumer:
    """See the module docstring."""

    def __init__(
        self,
        client: RedisClient,
        keys: Sequence[str],
        options: GroupOptions,
        handler: Handler,
        *,
        name: str = "stream-reader",
        on_error: Callable[[BaseException], object] | None = None,
        on_reclaimed: Callable[[int], object] | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.client: Any = client  # redis-py's stubs do not model stream replies
        self.keys = list(keys)
        self.options = options
        self.handler = handler
        self.on_error = on_error
        self.on_reclaimed = on_reclaimed
        self.backoff = backoff or Backoff(0.1, 5.0)
        self.clock = clock
        self.worker = Worker(name, self._run, log=logger)
        self._sleep = sleep or self.worker.wait
        self._groups_ready = False
        self._next_claim = 0.0
        self._cursors = dict.fromkeys(self.keys, "0" if options.read_pending else ">")
        self._inflight = 0
        self._inflight_changed = threading.Condition()
        self.taken = 0
        """Entries handed to the handler so far (a watchdog compares it with ``settled``)."""
        self.settled = 0
        """Entries finished so far: :meth:`done` with ``max_inflight``, else the handler
        returned for them."""

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer thread."""
        self.worker.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop after the batch in progress; True when the thread ended in time."""
        return self.worker.stop(timeout)

    @property
    def running(self) -> bool:
        """The thread runs and the groups exist (as far as the last command knew)."""
        return self.worker.alive and self._groups_ready

    @property
    def groups_ready(self) -> bool:
        """True once the groups were created (until a connection error or NOGROUP)."""
        return self._groups_ready

    def rewind(self) -> None:
        """Deliver this consumer's pending entries again before new ones (after a failed
        batch; with ``read_pending`` only)."""
        if self.options.read_pending:
            self._cursors = dict.fromkeys(self.keys, "0")

    # -- in-flight entries -----------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Entries delivered and not yet :meth:`done` (with ``max_inflight``)."""
        return self._inflight

    def done(self, count: int = 1) -> None:
        """``count`` delivered entries are finished (with ``max_inflight``)."""
        if self.options.max_inflight is None:
            return
        with self._inflight_changed:
            self._inflight = max(0, self._inflight - count)
            self.settled += count
            self._inflight_changed.notify_all()

    def _room(self) -> int:
        """Entries the next read may take: waits for a free slot; 0 when stopping."""
        limit = self.options.max_inflight
        if limit is None:
            return self.options.read_count
        with self._inflight_changed:
            while self._inflight >= limit:
                if self.worker.stopping:
                    return 0
                self._inflight_changed.wait(0.1)
            return min(self.options.read_count, limit - self._inflight)

    def _hold(self, count: int) -> None:
        if self.options.max_inflight is not None and count:
            with self._inflight_changed:
                self._inflight += count

    # -- the loop --------------------------------------------------------------------

    def _run(self, worker: Worker) -> None:
        while not worker.stopping:
            delay = self.step()
            if delay > 0 and not worker.stopping:
                self._sleep(delay)

    def step(self) -> float:
        """One pass of the loop: poll a batch and hand it to the handler. Returns the
        seconds to back off before the next pass (0 after a success)."""
        room = self._room()
        if not room:
            return 0.0
        try:
            batch = self.poll(room)
        except Exception as exc:
            return self._failed(exc)
        self._hold(len(batch))
        if batch:
            self.taken += len(batch)
            try:
                self.handler(batch)
            except Exception as exc:
                return self._failed(exc)
            if self.options.max_inflight is None:
                self.settled += len(batch)
        self.backoff.reset()
        return 0.0

    def _failed(self, exc: Exception) -> float:
        delay = self.backoff.next()
        extra = {"consumer": self.worker.name, "error": str(exc), "retry_in_s": round(delay, 2)}
        if isinstance(exc, CONNECTION_ERRORS):
            self._groups_ready = False
            logger.warning("redis unavailable; retrying", extra=extra)
        elif is_nogroup(exc):
            self._groups_ready = False
            logger.warning("consumer group missing; creating it again", extra=extra)
        else:
            logger.exception(
                "stream batch failed; its entries will be delivered again", extra=extra
            )
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                logger.exception("stream consumer error hook failed")
        return delay

    def poll(self, count: int) -> list[Delivery]:
        """At most about ``count`` entries (one ``XREADGROUP`` may return ``count`` per
        stream): claimed ones when a sweep is due, else read ones. Creates the groups when
        needed."""
        if not self._groups_ready:
            self.ensure_groups()
        if self.clock() >= self._next_claim:
            claimed = self.reclaim(count)
            if claimed:
                return claimed
        return self.read(count)

    # -- reading ---------------------------------------------------------------------

    def ensure_groups(self) -> None:
        """Create the group on every stream (existing groups are kept)."""
        ensure_groups(self.client, self.keys, self.options.group, self.options.start_id)
        self._groups_ready = True

    def read(self, count: int) -> list[Delivery]:
        """This consumer's own pending entries while there are (with ``read_pending``),
        else new entries, blocking up to ``read_block`` seconds."""
        pending = {key: cursor for key, cursor in self._cursors.items() if cursor != ">"}
        if pending:
            return self._read_pending(pending, count)
        reply = read_new(
            self.client,
            self.options.group,
            self.options.consumer,
            self.keys,
            count=count,
            block=self.options.read_block,
            wait=self.worker.wait,
        )
        return _deliveries(reply)

    def _read_pending(self, cursors: Mapping[str, str], count: int) -> list[Delivery]:
        group, consumer = self.options.group, self.options.consumer
        reply: StreamReply = []
        if is_cluster(self.client):
            for key, cursor in cursors.items():
                got = self.client.xreadgroup(group, consumer, {key: cursor}, count=count)
                reply.extend(got or [])
        else:
            reply = self.client.xreadgroup(group, consumer, dict(cursors), count=count) or []
        batch = _deliveries(reply)
        by_key: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in batch:
            by_key[delivery.stream].append(delivery)
        for key in cursors:
            got = by_key.get(key)
            self._cursors[key] = max((d.sid for d in got), key=stream_id) if got else ">"
            if got:
                self._check_deliveries(key, got)
        return batch

    def _check_deliveries(self, key: str, batch: Sequence[Delivery]) -> None:
        """Reject own pending entries read once more after ``max_deliveries`` deliveries
        (the read just counted one more)."""
        ids = sorted((d.sid for d in batch), key=stream_id)
        pending = self.client.xpending_range(
            key,
            self.options.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + PENDING_SCAN,
            consumername=self.options.consumer,
        )
        times = {as_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        for delivery in batch:
            before = times.get(delivery.sid, 1) - 1
            if before >= self.options.max_deliveries:
                delivery.rejected = _rejection(before)

    # -- reclaiming ------------------------------------------------------------------

    def reclaim(self, count: int) -> list[Delivery]:
        """Take over up to ``count`` entries idle for ``claim_idle`` seconds, those already
        delivered ``max_deliveries`` times marked as rejected; schedules the next sweep."""
        idle_ms = int(self.options.claim_idle * 1000)
        out: list[Delivery] = []
        for key in self.keys:
            if len(out) >= count:
                break
            out.extend(self._claim_exhausted(key, idle_ms, count - len(out)))
            start = "0-0"
            while len(out) < count:
                reply = self.client.xautoclaim(
                    key,
                    self.options.group,
                    self.options.consumer,
                    idle_ms,
                    start_id=start,
                    count=count - len(out),
                )
                start, entries = as_text(reply[0]), reply[1]
                for sid, fields in entries:
                    out.append(Delivery(key, as_text(sid), fields, reclaimed=True))
                if start == "0-0" or not entries:
                    break
        now = self.clock()
        self._next_claim = now if len(out) >= count else now + self.options.claim_interval
        claimed = sum(d.reclaimed for d in out)
        if claimed:
            logger.info(
                "pending entries taken over",
                extra={"consumer": self.worker.name, "entries": claimed},
            )
            if self.on_reclaimed is not None:
                self.on_reclaimed(claimed)
        return out

    def _claim_exhausted(self, key: str, idle_ms: int, room: int) -> list[Delivery]:
        """Idle entries already delivered ``max_deliveries`` times, claimed (so this
        consumer may acknowledge them) and rejected."""
        pending = self.client.xpending_range(
            key, self.options.group, min="-", max="+", count=PENDING_SCAN, idle=idle_ms
        )
        times = {
            as_text(p["message_id"]): int(p["times_delivered"])
            for p in pending
            if int(p["times_delivered"]) >= self.options.max_deliveries
        }
        if not times:
            return []
        ids = list(times)[:room]
        claimed = self.client.xclaim(key, self.options.group, self.options.consumer, idle_ms, ids)
        out = []
        for sid, fields in claimed:
            text = as_text(sid)
            out.append(Delivery(key, text, fields, rejected=_rejection(times.get(text, 0))))
        return out

    # -- finishing entries -----------------------------------------------------------

    def ack(self, acks: Mapping[str, Sequence[str]]) -> None:
        """``XACK`` entries, ``{stream: [sid, ...]}`` (one round trip on a single Redis)."""
        acks = {stream: sids for stream, sids in acks.items() if sids}
        if not acks:
            return
        if is_cluster(self.client):
            for stream, sids in acks.items():
                self.client.xack(stream, self.options.group, *sids)
            return
        pipe = self.client.pipeline(transaction=False)
        for stream, sids in acks.items():
            pipe.xack(stream, self.options.group, *sids)
        pipe.execute()

    def deadletter(
        self,
        items: Sequence[tuple[Delivery, str, str]],
        *,
        stream: str,
        maxlen: int,
        max_value_bytes: int = 1 << 16,
    ) -> None:
        """Add one dead-letter record per ``(delivery, reason, detail)`` to ``stream``
        (``MAXLEN ~ maxlen``). The entries are not acknowledged here."""
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        for delivery, reason, detail in items:
            record = deadletter_record(
                delivery.stream,
                delivery.sid,
                delivery.fields or {},
                reason,
                detail,
                max_value_bytes=max_value_bytes,
            )
            pipe.xadd(stream, record, maxlen=maxlen, approximate=True)
        pipe.execute()

    # -- observing -------------------------------------------------------------------

    def lag(self) -> dict[str, tuple[int, int]]:
        """``{stream: (lag, pending)}`` of the group on every stream that has it."""
        readings = {}
        for key in self.keys:
            try:
                groups = self.client.xinfo_groups(key)
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    continue
                raise
            for info in groups:
                if as_text(info.get("name")) != self.options.group:
                    continue
                pending = int(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is None:  # Redis < 7: count entries after the last delivered id
                    last = as_text(info.get("last-delivered-id", "0-0"))
                    lag = len(self.client.xrange(key, min=f"({last}", count=10_000))
                readings[key] = (int(lag), pending)
        return readings


def _rejection(deliveries: int) -> tuple[str, str]:
    return MAX_DELIVERIES_REASON, f"delivered {deliveries} times without a result"


def _deliveries(reply: StreamReply) -> list[Delivery]:
    return [
        Delivery(as_text(stream), as_text(sid), fields)
        for stream, entries in reply
        for sid, fields in entries
    ]
