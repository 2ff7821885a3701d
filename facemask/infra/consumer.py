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

Rejections (never handed to the handler): an entry already delivered
``max_deliveries`` times (a consumer crashed on it) gets :attr:`Delivery.rejected`
``("max_deliveries", detail)``, an entry deleted (trimmed) while pending
``("trimmed", ...)``. A rejected entry is dead-lettered: by default the consumer itself
adds a :func:`~facemask.contracts.wire.deadletter_record` to ``deadletter_key(stream)``
and acknowledges the entry in one round trip, then calls ``on_deadletter(reason)``
(a counter); a service with its own path (the inference service publishes dead letters
with its ownership-checking script) passes ``reject`` instead and owns the entry from
then on.

Entry isolation: an exception of the handler is either a Redis fault
(:func:`~facemask.infra.redisconn.classify`: connection, timeout, NOGROUP, OOM,
READONLY, cluster redirections...) or something about the entries. A fault fails the
whole batch: ``on_error`` (metrics, roll back), back-off
(:class:`~facemask.infra.backoff.Backoff`, reset by the next success), the entries are
delivered again. Anything else is narrowed down to the entries that raise: after
``on_error`` (the service's roll back) the batch is bisected and the halves handled
again, so the good entries are processed (and committed by the handler) and each entry
that raises on its own gets a strike (:meth:`entry_failed`). An entry with
``entry_attempts`` strikes is rejected with reason ``error`` and the exception (type and
message) as the detail; before that it stays pending and comes again after a back-off.
When every entry of a batch of several raises on its own, the cause is not an entry (a
full disk): no strikes, the batch is retried after a back-off (``max_deliveries`` still
bounds it). A consumer with ``max_inflight`` owns its entries asynchronously: its handler
isolates each entry itself and calls :meth:`entry_failed` / :meth:`reject`.

Acknowledging a processed entry is the handler's business (:meth:`ack`, or the service's
own script), so a service decides when an entry is done: after its commit, atomically
with its output.

Fair reading: each read asks the streams in a rotating order and splits ``count`` over
them (a stream with more entries gets the share others left, see
:func:`~facemask.infra.redisconn.read_new`), and the batch is interleaved round-robin
over the streams and, with ``fair_key``, over the cameras within a stream (each
camera's entries stay in order), so under overload every stream and camera gets its
share of the in-flight slots and of the processing.

With ``max_inflight``, at most that many entries are read and not yet :meth:`done`: the
handler may finish them later on other threads (a backlog stays in Redis, not in memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from facemask.contracts.wire import as_text, deadletter_record
from facemask.infra.backoff import Backoff
from facemask.infra.redisconn import (
    RedisClient,
    StreamReply,
    classify,
    ensure_groups,
    is_cluster,
    is_fault,
    read_new,
)
from facemask.infra.worker import Worker

logger = logging.getLogger(__name__)

MAX_DELIVERIES_REASON = "max_deliveries"
TRIMMED_REASON = "trimmed"
ERROR_REASON = "error"
"""Dead-letter reason of an entry whose processing kept raising (the detail names the
exception)."""
MAX_STRIKES_KEPT = 10_000
"""Entries whose failures are remembered at once (oldest forgotten first)."""
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
    entry_attempts: int


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
    entry_attempts: int = 3
    """Failures of one entry's processing before it is dead-lettered (reason ``error``)."""

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
            entry_attempts=settings.entry_attempts,
            **overrides,
        )

    def __post_init__(self) -> None:
        if self.read_count < 1 or self.max_deliveries < 1 or self.entry_attempts < 1:
            raise ValueError("read_count, max_deliveries and entry_attempts must be >= 1")
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


def describe(exc: BaseException, limit: int = 500) -> str:
    """``"Type: message"`` of an exception, bounded (a dead letter's detail)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


Handler = Callable[[list[Delivery]], object]
Reject = Callable[[Delivery, str, str], object]


def default_deadletter_key(stream: str) -> str:
    """``<stream>:deadletter`` (services pass their layout's key instead)."""
    return f"{stream}:deadletter"


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
        deadletter_key: Callable[[str], str] = default_deadletter_key,
        deadletter_maxlen: int = 10_000,
        on_deadletter: Callable[[str], object] | None = None,
        reject: Reject | None = None,
        fair_key: Callable[[Delivery], Hashable] | None = None,
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
        self.deadletter_key = deadletter_key
        self.deadletter_maxlen = deadletter_maxlen
        self.on_deadletter = on_deadletter
        self._reject_hook = reject
        self.fair_key = fair_key
        self._strikes: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._strikes_lock = threading.Lock()
        self._rotation = 0
        self._open = 0
        """Entries of the batch in progress neither settled nor handed over (kept by the
        thread running :meth:`step` only)."""
        self._stepping: int | None = None
        self.deadlettered: dict[str, int] = defaultdict(int)
        """Entries this consumer dead-lettered itself, by reason."""
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

    def _settle(self, count: int) -> None:
        """Entries of the batch in progress finished here (processed, dead-lettered, or
        left pending to come again): they free their slot and count as settled."""
        if count <= 0:
            return
        self._close_open(count)
        if self.options.max_inflight is not None:
            self.done(count)
        else:
            self.settled += count

    def _close_open(self, count: int) -> None:
        """Entries of the step in progress finished or handed over (other threads
        finishing entries of earlier steps leave the count alone)."""
        if self._stepping == threading.get_ident():
            self._open = max(0, self._open - count)

    def invalidate_groups(self) -> None:
        """The groups must be created again before the next read (another thread of the
        service saw ``NOGROUP``: Redis lost them)."""
        self._groups_ready = False

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
        if not batch:
            self.backoff.reset()
            return 0.0
        self.taken += len(batch)
        self._open = len(batch)
        self._stepping = threading.get_ident()
        try:
            work = self._screen(batch)
            retry = self._dispatch(work) if work else False
        except Exception as exc:
            self._settle(self._open)  # left pending: delivered again
            self.rewind()
            return self._failed(exc)
        finally:
            self._stepping = None
        if retry:
            self.rewind()
            return self.backoff.next()
        self.backoff.reset()
        return 0.0

    def _screen(self, batch: list[Delivery]) -> list[Delivery]:
        """Reject trimmed and exhausted entries; the rest, interleaved, for the handler."""
        work, rejected = [], []
        for delivery in batch:
            if delivery.rejected is None and delivery.fields is None:
                delivery.rejected = (TRIMMED_REASON, "deleted from the stream while pending")
            if delivery.rejected is None:
                work.append(delivery)
            else:
                rejected.append((delivery, *delivery.rejected))
        if rejected:
            self._reject_all(rejected)
        return work

    def _dispatch(self, work: list[Delivery]) -> bool:
        """Hand ``work`` to the handler, isolating entries that raise. True when some
        were left pending to be tried again (after a back-off)."""
        if self.options.max_inflight is not None:
            # The handler owns the entries now (it calls done / entry_failed itself).
            self._close_open(len(work))
            self.handler(work)
            return False
        failed: list[tuple[Delivery, Exception]] = []
        processed = self._isolate(work, failed)
        if not failed:
            return False
        systemic = processed == 0 and len(work) > 1
        if systemic:
            # Every entry raised on its own: the service's state (a full disk) rather
            # than poison entries. Only entries that already failed alone while others
            # passed get a strike; the rest are retried later (max_deliveries bounds it).
            logger.error(
                "every entry of the batch failed; retrying it after a back-off",
                extra={"consumer": self.worker.name, "entries": len(work)},
            )
        pending = False
        for delivery, exc in failed:
            if systemic and not self.failing(delivery):
                self._settle(1)
                pending = True
            elif not self.entry_failed(delivery, exc):
                pending = True
        return pending

    def failing(self, delivery: Delivery) -> bool:
        """True while ``delivery`` has strikes (it raised, and is to be tried again).

        A handler that skips entries at or below a committed offset must not skip these:
        entries after it in its stream may have been committed while it was isolated."""
        with self._strikes_lock:
            return (delivery.stream, delivery.sid) in self._strikes

    def _isolate(self, batch: list[Delivery], failed: list[tuple[Delivery, Exception]]) -> int:
        """Handle ``batch``; when it raises (not a Redis fault), roll back and bisect.
        Returns the entries processed; those raising alone are appended to ``failed``."""
        try:
            self.handler(batch)
        except Exception as exc:
            if is_fault(exc):
                raise
            self._report(exc, entries=len(batch))
            if len(batch) == 1:
                failed.append((batch[0], exc))
                return 0
            middle = len(batch) // 2
            return self._isolate(batch[:middle], failed) + self._isolate(batch[middle:], failed)
        self._settle(len(batch))
        return len(batch)

    def entry_failed(self, delivery: Delivery, exc: BaseException, *, release: bool = True) -> bool:
        """The processing of ``delivery`` raised ``exc`` (not a Redis fault): one strike.

        At ``entry_attempts`` strikes the entry is rejected (:meth:`reject`, reason
        ``error``, the exception as the detail) and True is returned. Before that it
        stays pending, to be delivered again (own pending entries after a back-off, or
        :meth:`reclaim` after ``claim_idle``), and with ``release`` its slot is freed."""
        key = (delivery.stream, delivery.sid)
        with self._strikes_lock:
            strikes = self._strikes.pop(key, 0) + 1
            if strikes < self.options.entry_attempts:
                self._strikes[key] = strikes
                while len(self._strikes) > MAX_STRIKES_KEPT:
                    self._strikes.popitem(last=False)
        extra = {
            "consumer": self.worker.name,
            "stream": delivery.stream,
            "sid": delivery.sid,
            "error": describe(exc),
            "attempt": strikes,
        }
        if strikes >= self.options.entry_attempts:
            logger.error("entry keeps failing; dead-lettering it", extra=extra)
            self.reject(delivery, ERROR_REASON, describe(exc))
            return True
        logger.warning("entry failed; it will be delivered again", extra=extra)
        if release:
            self._settle(1)
        return False

    def reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        """Dead-letter one entry with ``reason`` (see the module docstring)."""
        self._reject_all([(delivery, reason, detail)])

    def _reject_all(self, items: Sequence[tuple[Delivery, str, str]]) -> None:
        with self._strikes_lock:
            for delivery, _reason, _detail in items:
                self._strikes.pop((delivery.stream, delivery.sid), None)
        if self._reject_hook is not None:
            for delivery, reason, detail in items:
                self._close_open(1)
                self._reject_hook(delivery, reason, detail)
                if self.options.max_inflight is None:
                    self.settled += 1
            return
        by_target: dict[str, list[tuple[Delivery, str, str]]] = defaultdict(list)
        for item in items:
            by_target[self.deadletter_key(item[0].stream)].append(item)
        for target, group in by_target.items():
            self.deadletter(group, stream=target, maxlen=self.deadletter_maxlen, ack=True)
        for delivery, reason, detail in items:
            self.deadlettered[reason] += 1
            logger.warning(
                "entry dead-lettered",
                extra={
                    "consumer": self.worker.name,
                    "stream": delivery.stream,
                    "sid": delivery.sid,
                    "reason": reason,
                    "error": detail,
                },
            )
            if self.on_deadletter is not None:
                try:
                    self.on_deadletter(reason)
                except Exception:
                    logger.exception("stream consumer dead-letter hook failed")
        self._settle(len(items))

    def _report(self, exc: Exception, **extra: Any) -> None:
        logger.warning(
            "stream batch failed; narrowing it down",
            extra={"consumer": self.worker.name, "error": describe(exc), **extra},
        )
        self._call_on_error(exc)

    def _call_on_error(self, exc: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                logger.exception("stream consumer error hook failed")

    def _failed(self, exc: Exception) -> float:
        delay = self.backoff.next()
        kind = classify(exc)
        extra = {
            "consumer": self.worker.name,
            "error": str(exc),
            "kind": kind,
            "retry_in_s": round(delay, 2),
        }
        if kind in ("connection", "timeout", "loading", "cluster", "nogroup"):
            self._groups_ready = False
            logger.warning("redis unavailable or groups lost; retrying", extra=extra)
        elif kind != "other":
            logger.warning("redis refused the command; retrying", extra=extra)
        else:
            logger.exception(
                "stream batch failed; its entries will be delivered again", extra=extra
            )
        self._call_on_error(exc)
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
            return self.interleave(self._read_pending(pending, count))
        start = self._rotation % len(self.keys)
        self._rotation = start + 1
        reply = read_new(
            self.client,
            self.options.group,
            self.options.consumer,
            self.keys[start:] + self.keys[:start],
            count=count,
            block=self.options.read_block,
            wait=self.worker.wait,
        )
        return self.interleave(_deliveries(reply))

    def interleave(self, batch: list[Delivery]) -> list[Delivery]:
        """``batch`` round-robin over streams and, within a stream, over ``fair_key``
        (each one's entries in their order)."""
        queues: dict[tuple[str, Hashable], list[Delivery]] = {}
        for delivery in batch:
            sub: Hashable = None
            if self.fair_key is not None and delivery.fields is not None:
                try:
                    sub = self.fair_key(delivery)
                except Exception:  # a malformed entry: it gets a turn of its own
                    sub = None
            queues.setdefault((delivery.stream, sub), []).append(delivery)
        if len(queues) <= 1:
            return batch
        lanes = [iter(q) for q in queues.values()]
        out: list[Delivery] = []
        while lanes:
            alive = []
            for lane in lanes:
                item = next(lane, None)
                if item is not None:
                    out.append(item)
                    alive.append(lane)
            lanes = alive
        return out

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
                    out.append(Delivery(key, as_text(sid), fields or None, reclaimed=True))
                # Redis >= 7 names the entries deleted while pending (and drops them from
                # the pending list): they are rejected as trimmed, not silently gone.
                for sid in reply[2] if len(reply) > 2 else ():
                    out.append(Delivery(key, as_text(sid), None, reclaimed=True))
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
            rejection = _rejection(times.get(text, 0))
            out.append(Delivery(key, text, fields or None, rejected=rejection))
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
        ack: bool = False,
    ) -> None:
        """Add one dead-letter record per ``(delivery, reason, detail)`` to ``stream``
        (``MAXLEN ~ maxlen``); with ``ack`` acknowledge the entries in the same round
        trip (else that is the caller's business)."""
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
            if ack:
                pipe.xack(delivery.stream, self.options.group, delivery.sid)
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
    # A pending entry deleted from the stream comes with no fields (nil, or {} as
    # redis-py parses it); an entry always has at least one field otherwise.
    return [
        Delivery(as_text(stream), as_text(sid), fields or None)
        for stream, entries in reply
        for sid, fields in entries
    ]
