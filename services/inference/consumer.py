"""Redis Streams consumer: frames in, one detections entry per frame out.

Threads:

- **reader** (:class:`~facemask.infra.consumer.StreamGroupConsumer`, consumer group
  ``inference``, so replicas share the load): reads every partition's frame stream,
  parses each entry and submits it to the batcher. Every ``claim_interval`` it takes over
  entries idle longer than ``claim_idle`` in dead consumers (``XAUTOCLAIM``); entries
  already delivered ``max_deliveries`` times go to the dead-letter stream instead. At
  most ``max_inflight`` frames are read and unpublished at once, so a backlog stays in
  Redis, not in memory.
- **publisher**: takes finished frames and, per frame, runs one Lua script that checks
  this consumer still owns the entry, ``XADD``s the detections entry (``MAXLEN ~``) and
  ``XACK``s the frame, atomically. The frame, detections and dead-letter streams of a
  partition share a hash tag, so this works on a Redis Cluster too. A crash before the
  script leaves the frame pending (another consumer reclaims it); a crash after it leaves
  nothing to redo: no frame is lost and no detections entry is duplicated.
- **lag monitor**: reads ``XINFO GROUPS`` into the lag / pending gauges.

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

import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import (
    DetectionsEntry,
    FrameEntry,
    WireError,
    deadletter_record,
)
from facemask.core.preprocess import ImageDecodeError
from facemask.infra.backoff import Backoff
from facemask.infra.consumer import Delivery, GroupOptions, StreamGroupConsumer
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient, is_cluster
from facemask.infra.worker import Worker
from services.inference.batcher import DynamicBatcher, Job, JobResult, QueueFullError
from services.inference.config import InferenceSettings
from services.inference.metrics import InferenceMetrics

logger = logging.getLogger(__name__)

# KEYS[1] output stream, KEYS[2] frame stream;
# ARGV[1] group, ARGV[2] frame entry id, ARGV[3] consumer, ARGV[4] maxlen, ARGV[5..] fields.
PUBLISH_AND_ACK = """
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

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


class StreamConsumer:
    """Consumes every partition's frame stream through the dynamic batcher."""

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        batcher: DynamicBatcher,
        metrics: InferenceMetrics,
        settings: InferenceSettings,
        model_version: str,
    ) -> None:
        self.client: Any = client  # redis-py's stubs do not model stream replies
        self.layout = layout
        self.batcher = batcher
        self.metrics = metrics
        self.settings = settings
        self.model_version = model_version
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
        )
        self._outbox: queue.Queue[Outcome] = queue.Queue()
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
    def inflight(self) -> int:
        """Frames read and not yet published."""
        return self.streams.inflight

    @property
    def failed(self) -> bool:
        """True when one of the threads died of an exception (it is logged)."""
        return any(w.failed for w in (self.streams.worker, self._publisher, self._lag))

    # -- reading ---------------------------------------------------------------------

    def _read_failed(self, exc: BaseException) -> None:
        if isinstance(exc, CONNECTION_ERRORS):
            self.metrics.redis_errors.inc()

    def _take(self, batch: list[Delivery]) -> None:
        """Take ownership of delivered entries (each holds one in-flight slot)."""
        for delivery in batch:
            try:
                self._handle(delivery)
            except Exception:  # a bug, not a bad frame: leave it pending, free its slot
                logger.exception("frame left pending", extra={"sid": delivery.sid})
                self.streams.done(1)

    def _handle(self, delivery: Delivery) -> None:
        stream, sid, fields = delivery.stream, delivery.sid, delivery.fields
        if delivery.rejected is not None:
            reason, detail = delivery.rejected
            self._deadletter(stream, sid, fields or {}, reason, detail)
            return
        if fields is None:  # trimmed while pending: nothing left to run
            self._outbox.put(
                Outcome(stream, sid, "", {"reason": "trimmed"}, deadletter_reason="trimmed")
            )
            return
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
            self._finished(stream, sid, frame, skipped)
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
            except Exception as exc:  # shutting down: leave it pending for a peer
                logger.info("frame left pending", extra={"sid": sid, "error": str(exc)})
                self.streams.done(1)
                return
        future.add_done_callback(lambda f: self._finished(stream, sid, frame, f))

    def _deadletter(
        self, stream: str, sid: str, fields: Mapping[Any, Any], reason: str, detail: str
    ) -> None:
        record = deadletter_record(stream, sid, fields, reason, detail, max_value_bytes=1 << 20)
        camera = record["camera"]
        self._outbox.put(Outcome(stream, sid, camera, record, deadletter_reason=reason))

    def _finished(
        self, stream: str, sid: str, frame: FrameEntry, future: Future[JobResult]
    ) -> None:
        """Batcher callback (model or decode thread): hand the result to the publisher."""
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
            model=self.model_version,
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
            self._publish(batch)

    def _script_call(self, item: Outcome) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the publish-and-ack script for one outcome."""
        partition = self.layout.partition_of_key(item.stream)
        if item.deadletter_reason:
            target, maxlen = self.layout.deadletter(partition), self.settings.deadletter_maxlen
        else:
            target, maxlen = self.layout.detections(partition), self.settings.detections_maxlen
        args: list[Any] = [self.group, item.sid, self.consumer, maxlen]
        for key, value in item.fields.items():
            args.extend((key, value))
        return [target, item.stream], args

    def _publish(self, batch: Sequence[Outcome]) -> None:
        backoff = Backoff(0.05, 5.0)
        cluster = is_cluster(self.client)
        replies: list[Any] = []
        while True:
            try:
                if cluster:
                    # A cluster pipeline cannot run scripts: one call per frame (routed to
                    # the partition's master); a retry resumes after the frames already done.
                    while len(replies) < len(batch):
                        keys, args = self._script_call(batch[len(replies)])
                        try:
                            replies.append(self._script(keys=keys, args=args))
                        except redis.ResponseError as exc:
                            replies.append(exc)
                    break
                pipe = self.client.pipeline(transaction=False)
                for item in batch:
                    keys, args = self._script_call(item)
                    self._script(keys=keys, args=args, client=pipe)
                replies = pipe.execute(raise_on_error=False)
                for reply in replies:
                    if isinstance(reply, CONNECTION_ERRORS):
                        raise reply
                break
            except CONNECTION_ERRORS as exc:
                self.metrics.redis_errors.inc()
                if self._publisher.stopping and backoff.attempts >= GIVE_UP_RETRIES:
                    logger.error(
                        "giving up publishing; frames stay pending for another consumer",
                        extra={"frames": len(batch) - len(replies), "error": str(exc)},
                    )
                    replies += [None] * (len(batch) - len(replies))
                    break
                logger.warning("publish failed; retrying", extra={"error": str(exc)})
                time.sleep(backoff.next())
        for item, reply in zip(batch, replies, strict=True):
            self._account(item, reply)
        self.streams.done(len(batch))

    def _account(self, item: Outcome, reply: Any) -> None:
        if reply is None:
            return
        if isinstance(reply, Exception):  # NOGROUP (group deleted): the entry is gone
            logger.error("frame not published", extra={"sid": item.sid, "error": str(reply)})
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
        except CONNECTION_ERRORS:
            self.metrics.redis_errors.inc()

    def measure_lag(self) -> dict[str, tuple[int, int]]:
        """Read (lag, pending) of this group on every frame stream into the gauges."""
        readings = self.streams.lag()
        for key, (lag, pending) in readings.items():
            self.metrics.stream_lag.labels(key, self.group).set(lag)
            self.metrics.stream_pending.labels(key, self.group).set(pending)
        return readings
