"""Redis Streams consumer: frames in, one detections entry per frame out.

Threads:

- **reader** (:class:`~facemask.infra.consumer.StreamGroupConsumer`, consumer group
  ``inference``, so replicas share the load): reads every partition's frame stream,
  parses each entry and submits it to the batcher. Every ``claim_interval`` it takes over
  entries idle longer than ``claim_idle`` in dead consumers (``XAUTOCLAIM``); entries
  already delivered ``max_deliveries`` times go to the dead-letter stream instead. At
  most ``max_inflight`` frames are read and unpublished at once, so a backlog stays in
  Redis, not in memory.
- **publisher**: takes the finished frames (up to ``PUBLISH_BATCH`` at once) and runs one
  Lua script per partition for all of them (one pipeline round trip): for each frame, in
  order, it checks this consumer still owns the entry, ``XADD``s the detections entry
  (``MAXLEN ~``) and ``XACK``s the frame, atomically per frame, with a reply per frame.
  The frame, detections and dead-letter streams of a partition share a hash tag, so this
  works on a Redis Cluster too (one call per partition instead of one per frame). A crash
  before the script leaves the frame pending (another consumer reclaims it); a crash
  after it leaves nothing to redo; a frame another consumer took over meanwhile is left
  to it: no frame is lost and no detections entry is duplicated.
- **lag monitor**: reads ``XINFO GROUPS`` into the lag / pending gauges.

Entry isolation: whatever raises for one entry (parse, submit, the result callback,
building or running its publish script) costs that entry a strike
(:meth:`~facemask.infra.consumer.StreamGroupConsumer.entry_failed`): it stays pending and
comes back through ``XAUTOCLAIM``; at ``entry_attempts`` strikes it is dead-lettered
with reason ``error`` and the exception. No entry blocks a partition, a thread or a slot.

Redis faults (:func:`~facemask.infra.redisconn.classify`) never end a thread: the reader
backs off (and creates the groups again after ``NOGROUP``); the publisher retries the
frames a transient fault (connection, timeout, OOM, READONLY, cluster failover) refused
with a back-off until Redis takes them, counted by kind. A frame whose pending entry
Redis lost (restarted without persistence: the script sees ``NOGROUP``, or the entry is
gone from the stream) is counted in ``facemask_inference_frames_lost_total`` and logged;
the reader then recreates the groups.

Frames older than ``max_frame_age`` when read (then not even decoded) or when they reach a
batch are not run: their entry says ``status=skipped reason=too_old`` (and they are
acknowledged), so no frame silently
vanishes and the service catches up to real time after an overload.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import (
    DetectionsEntry,
    FrameEntry,
    WireError,
    deadletter_record,
)
from facemask.core.preprocess import ImageDecodeError
from facemask.infra.backoff import Backoff
from facemask.infra.consumer import Delivery, GroupOptions, StreamGroupConsumer, describe
from facemask.infra.redisconn import RedisClient, classify, is_cluster
from facemask.infra.worker import Worker
from services.inference.batcher import (
    DynamicBatcher,
    Job,
    JobResult,
    QueueFullError,
    ShuttingDownError,
)
from services.inference.config import InferenceSettings
from services.inference.metrics import InferenceMetrics

logger = logging.getLogger(__name__)

# KEYS[1] frame stream, KEYS[2] detections stream, KEYS[3] dead-letter stream (one
# partition's: they share a hash tag); ARGV[1] group, ARGV[2] consumer, then per outcome:
# frame entry id, target (2: detections, 3: dead letter), maxlen, the number n of field
# names and values, those n strings. Returns one reply per outcome, in order: 1 published
# (and acknowledged), 0 another consumer owns or acked the entry, -1 the entry is gone from
# the stream (Redis lost it: restarted without persistence), or the error XADD replied
# (OOM, READONLY...: nothing written for that outcome). A missing group is an error reply
# for the whole call (NOGROUP), raised before anything is written.
PUBLISH_AND_ACK = """
local out = {}
local i = 3
while i <= #ARGV do
  local sid, target, maxlen = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  local first = i + 4
  i = first + tonumber(ARGV[i + 3])
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], sid, sid, 1)
  if #p == 0 then
    if #redis.call('XRANGE', KEYS[1], sid, sid) == 0 then out[#out + 1] = -1
    else out[#out + 1] = 0 end
  elseif p[1][2] ~= ARGV[2] then
    out[#out + 1] = 0
  else
    local added = redis.pcall('XADD', target, 'MAXLEN', '~', maxlen, '*',
      unpack(ARGV, first, i - 1))
    if type(added) == 'table' and added.err then
      out[#out + 1] = added
    else
      redis.call('XACK', KEYS[1], ARGV[1], sid)
      out[#out + 1] = 1
    end
  end
end
return out
"""
_DETECTIONS, _DEADLETTER = 2, 3  # KEYS index of the script's target stream

PUBLISH_BATCH = 256
GIVE_UP_RETRIES = 6
"""Failed publish attempts after which a stopping publisher leaves its frames pending."""


@dataclass(slots=True)
class Outcome:
    """A frame ready to be published: a detections entry or a dead letter."""

    stream: str
    sid: str
    camera_id: str
    fields: dict[str, Any]
    deadletter_reason: str = ""
    result: JobResult | None = None
    capture_ts: float | None = None
    holds_slot: bool = True
    """False for a frame skipped when read: its in-flight slot was freed at once, so a
    backlog of stale frames is read at the speed of Redis, not of the model."""

    def delivery(self) -> Delivery:
        """The entry it answers (for a strike or a dead letter)."""
        return Delivery(
            self.stream, self.sid, {"camera": self.camera_id} if self.camera_id else None
        )


def _camera_of(delivery: Delivery) -> object:
    fields = delivery.fields or {}
    return fields.get(b"camera", fields.get("camera"))


def _check_args(args: Sequence[Any]) -> None:
    """Raise for a value Redis cannot take (what redis-py would raise for the whole
    pipeline), so one bad outcome fails alone."""
    for value in args:
        if isinstance(value, bool) or not isinstance(value, bytes | str | int | float):
            raise TypeError(f"cannot publish a {type(value).__name__} field value")


class StreamConsumer:
    """Consumes every partition's frame stream through the dynamic batcher."""

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        batcher: DynamicBatcher,
        metrics: InferenceMetrics,
        settings: InferenceSettings,
    ) -> None:
        self.client: Any = client  # redis-py's stubs do not model stream replies
        self.layout = layout
        self.batcher = batcher
        self.metrics = metrics
        self.settings = settings
        self.group = settings.consumer_group
        self.consumer = settings.consumer_name
        self.streams = StreamGroupConsumer(
            client,
            layout.all_frames(),
            GroupOptions.from_settings(
                settings,
                start_id="0",
                # Its own pending frames come back through XAUTOCLAIM after claim_idle.
                read_pending=False,
                max_inflight=settings.max_inflight,
            ),
            self._take,
            name="stream-reader",
            on_error=self._read_failed,
            on_reclaimed=metrics.reclaimed.inc,
            reject=self._reject,
            fair_key=_camera_of,
            # dead letters: published by this service's own script (``_reject``)
        )
        self._outbox: queue.Queue[Outcome] = queue.Queue()
        self._publishing = 0
        self.published_total = 0
        """Outcomes whose publish round trip ended (published, lost, failed or given up)."""
        self._script = client.register_script(PUBLISH_AND_ACK)
        self._publisher = Worker("stream-publisher", self._publish_loop)
        self._lag = Worker.every("stream-lag", settings.lag_interval, self._lag_tick)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader, publisher and lag monitor threads."""
        self.streams.start()
        self._publisher.start()
        self._lag.start()

    def stop_reading(self, timeout: float = 5.0) -> None:
        """Take no new frames (first step of a graceful stop).

        Waits for the reader to hand what it already took to the batcher, so a frame is
        either submitted (and will be published) or was never read.
        """
        self.streams.stop(timeout)

    def stop(self, timeout: float) -> bool:
        """Stop reading, publish everything already processed, stop all threads.

        Returns True when every frame read was published (and acknowledged) in time.
        """
        self.stop_reading()
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.02)
        drained = self.inflight == 0
        for worker in (self._publisher, self._lag):
            worker.request_stop()
        for worker in (self._publisher, self._lag):
            worker.join(max(0.1, deadline - time.monotonic()))
        if not drained:
            logger.warning(
                "stopped with frames unpublished; they stay pending for another consumer",
                extra={"inflight": self.inflight},
            )
        return drained

    @property
    def unpublished(self) -> int:
        """Outcomes (results, skips, dead letters) waiting for or in a publish round trip;
        with :attr:`published_total`, what a progress watch sees stall while Redis refuses
        the results (``OOM``...)."""
        return self._outbox.qsize() + self._publishing

    @property
    def inflight(self) -> int:
        """Frames read and not yet published."""
        return self.streams.inflight

    @property
    def failed(self) -> bool:
        """True when one of the threads died of an exception (it is logged)."""
        return any(w.failed for w in (self.streams.worker, self._publisher, self._lag))

    # -- reading ---------------------------------------------------------------------

    def _read_failed(self, exc: BaseException) -> None:
        self._fault(exc)

    def _fault(self, exc: BaseException) -> str:
        """Count a Redis fault by kind; returns the kind (``other``: not a Redis fault)."""
        kind = classify(exc)
        if kind != "other":
            self.metrics.redis_errors.inc()
            self.metrics.redis_faults.labels(kind).inc()
        return kind

    def _take(self, batch: list[Delivery]) -> None:
        """Take ownership of delivered entries (each holds one in-flight slot)."""
        for delivery in batch:
            try:
                self._handle(delivery)
            except Exception as exc:  # isolated: a strike, then a dead letter
                self.streams.entry_failed(delivery, exc)

    def _reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        """The reader's rejections (trimmed, max_deliveries, failing again and again):
        published as dead letters by the script, like every outcome."""
        try:
            self._deadletter(delivery.stream, delivery.sid, delivery.fields or {}, reason, detail)
        except Exception:
            logger.exception("cannot build a dead letter; frame left pending")
            self.streams.done(1)

    def _handle(self, delivery: Delivery) -> None:
        stream, sid, fields = delivery.stream, delivery.sid, delivery.fields
        assert fields is not None  # trimmed entries are rejected by the reader
        try:
            frame = FrameEntry.from_fields(
                fields,
                max_bytes=self.settings.max_message_bytes,
                max_skew=self.settings.max_clock_skew,
            )
        except WireError as exc:
            self._deadletter(stream, sid, fields, exc.reason, exc.detail)
            return
        if time.time() - frame.capture_ts > self.settings.max_frame_age:
            # Already too old to run: skip it here, before any decode, so a backlog after
            # an overload is worked off at the speed of Redis, not of the decode pool.
            skipped: Future[JobResult] = Future()
            skipped.set_result(JobResult.too_old(frame.width, frame.height))
            self._result(stream, sid, frame, skipped, holds_slot=False)
            self.streams.done(1)
            return
        job = Job(
            data=frame.data,
            conf=self.settings.confidence,
            iou=self.settings.iou,
            camera_id=frame.camera_id,
            source="stream",
            capture_ts=frame.capture_ts,
            max_age=self.settings.max_frame_age,
            declared_size=(frame.width, frame.height),
            tiles=self.settings.tiles_for(frame.camera_id),
        )
        while True:
            try:
                future = self.batcher.submit(job)
                break
            except QueueFullError:
                time.sleep(0.005)  # gRPC traffic filled the queue: wait, do not drop
            except ShuttingDownError as exc:  # leave it pending for a peer
                logger.info("frame left pending", extra={"sid": sid, "error": str(exc)})
                self.streams.done(1)
                return
        future.add_done_callback(lambda f: self._finished(delivery, frame, f))

    def _deadletter(
        self, stream: str, sid: str, fields: Mapping[Any, Any], reason: str, detail: str
    ) -> None:
        record = deadletter_record(stream, sid, fields, reason, detail, max_value_bytes=1 << 20)
        camera = record["camera"]
        self._outbox.put(Outcome(stream, sid, camera, record, deadletter_reason=reason))

    def _finished(self, delivery: Delivery, frame: FrameEntry, future: Future[JobResult]) -> None:
        """Batcher callback (model or decode thread): hand the result to the publisher.
        Whatever raises here costs the entry a strike (never a lost slot)."""
        try:
            self._result(delivery.stream, delivery.sid, frame, future)
        except Exception as exc:
            self.streams.entry_failed(delivery, exc)

    def _result(
        self,
        stream: str,
        sid: str,
        frame: FrameEntry,
        future: Future[JobResult],
        *,
        holds_slot: bool = True,
    ) -> None:
        exc = future.exception()
        if exc is not None:
            reason = exc.reason if isinstance(exc, ImageDecodeError) else "error"
            fields = {"camera": frame.camera_id, "frame": frame.frame_id}
            self._deadletter(stream, sid, fields, reason, str(exc))
            return
        result = future.result()
        entry = DetectionsEntry(
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            frame_sid=sid,
            capture_ts=frame.capture_ts,
            done_ts=time.time(),
            width=frame.width,
            height=frame.height,
            model=result.model or self.batcher.model_version,  # skipped: the one running
            status=result.status,
            reason=result.reason,
            detections=result.detections,
            runs=result.model_runs,
        )
        self._outbox.put(
            Outcome(
                stream,
                sid,
                frame.camera_id,
                dict(entry.to_fields()),
                result=result,
                capture_ts=frame.capture_ts,
                holds_slot=holds_slot,
            )
        )

    # -- publishing ------------------------------------------------------------------

    def _publish_loop(self, worker: Worker) -> None:
        while not worker.stopping or not self._outbox.empty():
            try:
                first = self._outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            self._publishing = len(batch)
            try:
                self._publish(batch)
            except Exception:  # a bug: the thread goes on, the frames stay pending
                logger.exception(
                    "publish failed; frames left pending", extra={"frames": len(batch)}
                )
                self.streams.done(sum(item.holds_slot for item in batch))
            finally:
                self.published_total += len(batch)
                self._publishing = 0

    def _script_part(self, item: Outcome) -> list[Any]:
        """The script's ARGV for one outcome (see :data:`PUBLISH_AND_ACK`)."""
        if item.deadletter_reason:
            target, maxlen = _DEADLETTER, self.settings.deadletter_maxlen
        else:
            target, maxlen = _DETECTIONS, self.settings.detections_maxlen
        values: list[Any] = []
        for key, value in item.fields.items():
            values.extend((key, value))
        part = [item.sid, target, maxlen, len(values), *values]
        _check_args(part)
        return part

    def _publish(self, batch: Sequence[Outcome]) -> None:
        """Publish ``batch``: every outcome ends published, lost (counted), failed (a
        strike) or, while Redis refuses it (a fault), retried with a back-off."""
        backoff = Backoff(0.05, 5.0)
        finished = 0
        todo: list[tuple[Outcome, list[Any]]] = []
        for item in batch:
            try:
                todo.append((item, self._script_part(item)))
            except Exception as exc:
                finished += self._item_failed(item, exc)
        separate = is_cluster(self.client)
        single = False
        while todo:
            counted = False
            try:
                replies = self._run(todo, separate=separate, single=single)
            except Exception as exc:  # the whole round trip failed
                if self._fault(exc) == "other":
                    separate = single = True  # isolate the outcome that raises
                    continue
                replies, counted = [exc] * len(todo), True
            retry = []
            faults: list[Exception] = []
            for (item, part), reply in zip(todo, replies, strict=True):
                if not isinstance(reply, Exception):
                    self._account(item, reply)
                    finished += item.holds_slot
                    continue
                kind = classify(reply)
                if kind == "nogroup":
                    self._fault(reply)
                    self._lost(item, "nogroup", reply)
                    self.streams.invalidate_groups()
                    finished += item.holds_slot
                elif kind != "other":
                    retry.append((item, part))
                    faults.append(reply)
                else:
                    finished += self._item_failed(item, reply)
            todo = retry
            if not todo:
                break
            if not counted:
                self._fault(faults[0])  # one per round trip
            if self._publisher.stopping and backoff.attempts >= GIVE_UP_RETRIES:
                logger.error(
                    "giving up publishing; frames stay pending for another consumer",
                    extra={"frames": len(todo), "error": str(faults[0])},
                )
                finished += sum(item.holds_slot for item, _part in todo)
                break
            delay = backoff.next()
            logger.warning(
                "redis refused the results; retrying",
                extra={
                    "frames": len(todo),
                    "kind": classify(faults[0]),
                    "error": str(faults[0]),
                    "retry_in_s": round(delay, 2),
                },
            )
            self._publisher.wait(delay)
        self.streams.done(finished)

    def _calls(
        self, todo: Sequence[tuple[Outcome, list[Any]]], single: bool
    ) -> list[tuple[list[str], list[Any], list[int]]]:
        """The script calls for ``todo``: KEYS, ARGV and the indices (into ``todo``) of
        the outcomes each answers; one call per frame stream (``single``: per outcome)."""
        calls: dict[Any, tuple[list[str], list[Any], list[int]]] = {}
        for index, (item, part) in enumerate(todo):
            key: Any = index if single else item.stream
            call = calls.get(key)
            if call is None:
                partition = self.layout.partition_of_key(item.stream)
                keys = [
                    item.stream,
                    self.layout.detections(partition),
                    self.layout.deadletter(partition),
                ]
                call = calls[key] = (keys, [self.group, self.consumer], [])
            call[1].extend(part)
            call[2].append(index)
        return list(calls.values())

    def _run(
        self, todo: Sequence[tuple[Outcome, list[Any]]], *, separate: bool, single: bool
    ) -> list[Any]:
        """Run the script for every outcome: a reply or the exception, per outcome.

        One script call per frame stream (``single``: per outcome), all in one pipeline;
        ``separate``: each call on its own (a cluster pipeline cannot run scripts; calls
        are routed to their partition's master), also how an outcome that raises is
        isolated (with ``single``).
        """
        calls = self._calls(todo, single)
        if separate:
            results: list[Any] = []
            for keys, args, _indices in calls:
                try:
                    results.append(self._script(keys=keys, args=args))
                except Exception as exc:
                    results.append(exc)
        else:
            pipe = self.client.pipeline(transaction=False)
            for keys, args, _indices in calls:
                self._script(keys=keys, args=args, client=pipe)
            results = list(pipe.execute(raise_on_error=False))
        replies: list[Any] = [None] * len(todo)
        for (_keys, _args, indices), result in zip(calls, results, strict=True):
            reply: Any = result
            if not isinstance(reply, Exception) and (
                not isinstance(reply, list) or len(reply) != len(indices)
            ):
                reply = RuntimeError(f"unexpected publish script reply: {reply!r:.200}")
            if isinstance(reply, Exception) and len(indices) > 1 and classify(reply) == "other":
                # Not a fault: find the outcome it is about, each in a call of its own.
                for index in indices:
                    replies[index] = self._run([todo[index]], separate=True, single=True)[0]
                continue
            for position, index in enumerate(indices):
                replies[index] = reply if isinstance(reply, Exception) else reply[position]
        return replies

    def _item_failed(self, item: Outcome, exc: BaseException) -> int:
        """An outcome that cannot be published (not a Redis fault). Returns 1 when its
        slot is free now, 0 when a dead letter replacing it holds the slot."""
        if item.deadletter_reason or not item.holds_slot:
            # A dead letter, or a skip record, that fails: nothing further to try; the
            # entry stays pending (reclaimed later).
            self._lost(item, "error", exc)
            return int(item.holds_slot)
        return 0 if self.streams.entry_failed(item.delivery(), exc, release=False) else 1

    def _lost(self, item: Outcome, reason: str, exc: BaseException) -> None:
        """A processed frame whose result cannot be published (its entry is gone, or
        stays pending for another try)."""
        self.metrics.frames_lost.labels(reason).inc()
        logger.error(
            "frame result lost by a fault",
            extra={
                "camera_id": item.camera_id,
                "sid": item.sid,
                "stream": item.stream,
                "reason": reason,
                "error": describe(exc),
            },
        )

    def _account(self, item: Outcome, reply: Any) -> None:
        if int(reply) == -1:  # the frame entry is gone from the stream: Redis lost it
            self.metrics.frames_lost.labels("vanished").inc()
            logger.error(
                "frame result lost by a fault: its entry vanished from the stream",
                extra={"camera_id": item.camera_id, "sid": item.sid, "stream": item.stream},
            )
            self.streams.invalidate_groups()
            return
        if int(reply) == 0:
            self.metrics.duplicates.inc()
            return
        camera = item.camera_id or "unknown"
        if item.deadletter_reason:
            self.metrics.deadletters.labels(item.deadletter_reason).inc()
            self.metrics.requests.labels("stream", "invalid").inc()
            self.metrics.frames_skipped.labels(camera, item.deadletter_reason).inc()
            logger.warning(
                "frame dead-lettered",
                extra={"camera_id": camera, "sid": item.sid, "reason": item.deadletter_reason},
            )
            return
        result = item.result
        assert result is not None
        if result.status == "skipped":
            self.metrics.frames_skipped.labels(camera, result.reason).inc()
            self.metrics.requests.labels("stream", "skipped").inc()
            return
        self.metrics.requests.labels("stream", "ok").inc()
        self.metrics.frames_processed.labels(camera).inc()
        self.metrics.model_runs.labels(camera).inc(result.model_runs)
        for label in result.detections.labels:
            self.metrics.faces_detected.labels(camera, label).inc()
        if item.capture_ts is not None:
            self.metrics.frame_latency.observe(max(0.0, time.time() - item.capture_ts))

    # -- lag -------------------------------------------------------------------------

    def _lag_tick(self) -> None:
        try:
            self.measure_lag()
        except Exception as exc:
            if self._fault(exc) == "other":
                raise

    def measure_lag(self) -> dict[str, tuple[int, int]]:
        """Read (lag, pending) of this group on every frame stream into the gauges."""
        readings = self.streams.lag()
        for key, (lag, pending) in readings.items():
            self.metrics.stream_lag.labels(key, self.group).set(lag)
            self.metrics.stream_pending.labels(key, self.group).set(pending)
        return readings
