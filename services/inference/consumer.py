"""Redis Streams consumer: frames in, one detections entry per frame out.

Threads:

- **reader**: ``XREADGROUP`` over every partition's frame stream (consumer group
  ``inference``, so replicas share the load), parses each entry and submits it to the
  batcher. At most ``max_inflight`` frames are read and unpublished at once, so a backlog
  stays in Redis, not in memory.
- **publisher**: takes finished frames and, per frame, runs one Lua script that checks
  this consumer still owns the entry, ``XADD``s the detections entry (``MAXLEN ~``) and
  ``XACK``s the frame, atomically. The frame, detections and dead-letter streams of a
  partition share a hash tag, so this works on a Redis Cluster too. A crash before the
  script leaves the frame pending (another consumer reclaims it); a crash after it leaves
  nothing to redo: no frame is lost and no detections entry is duplicated.
- **reclaimer**: every ``claim_interval`` moves entries idle longer than ``claim_idle``
  from dead consumers to this one (``XAUTOCLAIM``); entries already delivered
  ``max_deliveries`` times go to the dead-letter stream instead.
- **lag monitor**: reads ``XINFO GROUPS`` into the lag / pending gauges.

Frames older than ``max_frame_age`` when they reach a batch are not run: their entry says
``status=skipped reason=too_old`` (and they are acknowledged), so no frame silently
vanishes and the service catches up to real time after an overload.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
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
    as_text,
    deadletter_record,
)
from facemask.core.preprocess import ImageDecodeError
from facemask.infra.redisconn import (
    CONNECTION_ERRORS,
    RedisClient,
    ensure_groups,
    is_cluster,
    read_new,
)
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


def _sid(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
        self._keys = layout.all_frames()
        self._slots = threading.BoundedSemaphore(settings.max_inflight)
        self._outbox: queue.Queue[Outcome] = queue.Queue()
        self._reading = threading.Event()
        self._publishing = threading.Event()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._script = client.register_script(PUBLISH_AND_ACK)
        self._threads: list[threading.Thread] = []
        self._groups_ready = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader, publisher, reclaimer and lag monitor threads."""
        self._reading.set()
        self._publishing.set()
        for name, target in (
            ("stream-reader", self._read_loop),
            ("stream-publisher", self._publish_loop),
            ("stream-reclaimer", self._reclaim_loop),
            ("stream-lag", self._lag_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_reading(self, timeout: float = 5.0) -> None:
        """Take no new frames (first step of a graceful stop).

        Waits for the reader and reclaimer to hand what they already took to the batcher,
        so a frame is either submitted (and will be published) or was never read.
        """
        self._reading.clear()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.name in ("stream-reader", "stream-reclaimer"):
                thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float) -> bool:
        """Stop reading, publish everything already processed, stop all threads.

        Returns True when every frame read was published (and acknowledged) in time.
        """
        self.stop_reading()
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.02)
        drained = self.inflight == 0
        self._publishing.clear()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if not drained:
            logger.warning(
                "stopped with frames unpublished; they stay pending for another consumer",
                extra={"inflight": self.inflight},
            )
        return drained

    @property
    def inflight(self) -> int:
        """Frames read and not yet published."""
        return self._inflight

    def _add_inflight(self, delta: int) -> None:
        with self._inflight_lock:
            self._inflight += delta

    # -- reading ---------------------------------------------------------------------

    def _ensure_groups(self) -> None:
        ensure_groups(self.client, self._keys, self.group, "0")
        self._groups_ready = True

    def _acquire(self, wanted: int) -> int:
        """Take up to ``wanted`` in-flight slots (at least one; waits for it)."""
        got = 0
        while got == 0 and self._reading.is_set():
            if self._slots.acquire(timeout=0.1):
                got = 1
        while got and got < wanted and self._slots.acquire(blocking=False):
            got += 1
        return got

    def _release(self, count: int) -> None:
        for _ in range(count):
            with contextlib.suppress(ValueError):
                self._slots.release()

    def _read_loop(self) -> None:
        backoff = 0.1
        while self._reading.is_set():
            slots = self._acquire(self.settings.read_count)
            if not slots:
                break
            try:
                if not self._groups_ready:
                    self._ensure_groups()
                response = read_new(
                    self.client,
                    self.group,
                    self.consumer,
                    self._keys,
                    count=slots,
                    block=self.settings.read_block,
                )
                backoff = 0.1
            except CONNECTION_ERRORS as exc:
                self._release(slots)
                self._groups_ready = False
                self.metrics.redis_errors.inc()
                logger.warning("redis unavailable; retrying", extra={"error": str(exc)})
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            used = 0
            for stream, entries in response:
                for sid, fields in entries:
                    used += 1
                    self._handle(_sid(stream), _sid(sid), fields)
            self._release(slots - used)

    def _handle(self, stream: str, sid: str, fields: Mapping[Any, Any] | None) -> None:
        """Take ownership of one delivered entry (one in-flight slot is held for it)."""
        self._add_inflight(1)
        if fields is None:  # trimmed while pending: nothing left to run
            self._outbox.put(
                Outcome(stream, sid, "", {"reason": "trimmed"}, deadletter_reason="trimmed")
            )
            return
        try:
            frame = FrameEntry.from_fields(fields, max_bytes=self.settings.max_message_bytes)
        except WireError as exc:
            self._deadletter(stream, sid, fields, exc.reason, exc.detail)
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
                self._add_inflight(-1)
                self._release(1)
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

    def _publish_loop(self) -> None:
        while self._publishing.is_set() or not self._outbox.empty():
            try:
                first = self._outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 256:
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
        backoff = 0.05
        cluster = is_cluster(self.client)
        replies: list[Any] = []
        while True:
            try:
                if cluster:
                    # A cluster pipeline cannot run scripts: one call per frame (routed to
                    # the partition's master); a retry resumes after the frames already done.
                    while len(replies) < len(batch):
                        keys, args = self._script_call(batch[len(replies)])
                        replies.append(self._script(keys=keys, args=args))
                    break
                pipe = self.client.pipeline(transaction=False)
                for item in batch:
                    keys, args = self._script_call(item)
                    self._script(keys=keys, args=args, client=pipe)
                replies = pipe.execute()
                break
            except CONNECTION_ERRORS as exc:
                self.metrics.redis_errors.inc()
                if not self._publishing.is_set() and backoff > 2.0:
                    logger.error(
                        "giving up publishing; frames stay pending for another consumer",
                        extra={"frames": len(batch) - len(replies), "error": str(exc)},
                    )
                    replies += [None] * (len(batch) - len(replies))
                    break
                logger.warning("publish failed; retrying", extra={"error": str(exc)})
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        for item, reply in zip(batch, replies, strict=True):
            self._account(item, reply)
            self._add_inflight(-1)
            self._release(1)

    def _account(self, item: Outcome, reply: Any) -> None:
        if reply is None:
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

    # -- reclaiming ------------------------------------------------------------------

    def _reclaim_loop(self) -> None:
        while self._reading.is_set():
            deadline = time.monotonic() + self.settings.claim_interval
            while self._reading.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._reading.is_set() or not self._groups_ready:
                continue
            try:
                for key in self._keys:
                    self._reclaim(key)
            except CONNECTION_ERRORS as exc:
                self.metrics.redis_errors.inc()
                logger.warning("reclaim sweep failed", extra={"error": str(exc)})
            except Exception:
                logger.exception("reclaim sweep failed")

    def _reclaim(self, key: str) -> None:
        idle_ms = int(self.settings.claim_idle * 1000)
        pending = self.client.xpending_range(
            key, self.group, min="-", max="+", count=100, idle=idle_ms
        )
        for entry in pending:
            if entry["times_delivered"] >= self.settings.max_deliveries:
                claimed = self.client.xclaim(
                    key, self.group, self.consumer, idle_ms, [entry["message_id"]]
                )
                for sid, fields in claimed:
                    if self._acquire(1):
                        self._add_inflight(1)
                        self._deadletter(
                            key,
                            _sid(sid),
                            fields or {},
                            "max_deliveries",
                            f"delivered {entry['times_delivered']} times without a result",
                        )
        start = "0-0"
        while self._reading.is_set():
            slots = self._acquire(self.settings.read_count)
            if not slots:
                return
            reply = self.client.xautoclaim(
                key, self.group, self.consumer, idle_ms, start_id=start, count=slots
            )
            start, entries = _sid(reply[0]), reply[1]
            for sid, fields in entries:
                self.metrics.reclaimed.inc()
                self._handle(key, _sid(sid), fields)
            self._release(slots - len(entries))
            if start == "0-0" or not entries:
                return

    # -- lag -------------------------------------------------------------------------

    def _lag_loop(self) -> None:
        while self._publishing.is_set():
            try:
                self.measure_lag()
            except CONNECTION_ERRORS:
                self.metrics.redis_errors.inc()
            except Exception:
                logger.exception("lag reading failed")
            deadline = time.monotonic() + self.settings.lag_interval
            while self._publishing.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)

    def measure_lag(self) -> dict[str, tuple[int, int]]:
        """Read (lag, pending) of this group on every frame stream into the gauges."""
        readings = {}
        for key in self._keys:
            try:
                groups = self.client.xinfo_groups(key)
            except Exception as exc:
                if "no such key" in str(exc).lower():
                    continue
                raise
            for info in groups:
                name = as_text(info.get("name"))
                if name != self.group:
                    continue
                pending = int(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is None:  # Redis < 7: count entries after the last delivered id
                    last = as_text(info.get("last-delivered-id", "0-0"))
                    lag = len(self.client.xrange(key, min=f"({last}", count=10_000))
                readings[key] = (int(lag), pending)
                self.metrics.stream_lag.labels(key, self.group).set(int(lag))
                self.metrics.stream_pending.labels(key, self.group).set(pending)
        return readings
