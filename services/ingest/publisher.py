"""Redis publisher: one thread that ``XADD``s the frames of every camera of the node.

Camera threads :meth:`Publisher.put` encoded frames into a bounded ring buffer and never
wait on Redis. The publisher thread sends them in pipelined batches (``XADD ... MAXLEN ~
N``). While Redis is unreachable the buffer keeps the newest ``capacity`` frames: a new
frame pushes out the oldest one (counted as ``dropped{reason="buffer_full"}``), so memory
stays bounded however long the outage lasts (at most ``capacity`` frames plus the one
batch of at most ``batch`` frames being sent), and the thread reconnects with capped exponential
backoff. On reconnection it re-checks the stream layout and sends what is buffered, oldest
first, so frame ids stay increasing on every stream.

Delivery is at-least-once: a batch interrupted by a dropped connection is sent again, so a
consumer may see a frame id twice (it can drop repeats by ``(camera, frame)``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facemask.contracts.streams import LayoutMismatchError
from facemask.infra.backoff import Backoff
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient, classify, is_fault
from facemask.infra.worker import Worker
from services.ingest.metrics import IngestMetrics

logger = logging.getLogger(__name__)


class WritesRefusedError(Exception):
    """Redis answered but refused to add frames for now (``OOM`` at ``maxmemory``,
    ``READONLY`` during a failover, ...): the frames are kept and sent again later."""

    def __init__(self, frames: list[OutgoingFrame], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.frames = frames
        self.cause = cause


@dataclass(frozen=True, slots=True)
class OutgoingFrame:
    """One encoded frame ready for ``XADD``."""

    camera_id: str
    stream: str
    frame_id: int
    fields: dict[str, bytes | str]
    nbytes: int


class Publisher:
    """Bounded ring buffer + publishing thread with reconnects."""

    def __init__(
        self,
        client: RedisClient,
        *,
        maxlen: int,
        capacity: int,
        metrics: IngestMetrics,
        batch: int = 16,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        on_connect: Callable[[RedisClient], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.client = client
        self.maxlen = maxlen
        self.capacity = capacity
        self.batch = batch
        self.metrics = metrics
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._on_connect = on_connect
        self._on_fatal = on_fatal
        self._buf: deque[OutgoingFrame] = deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._draining = False  # stop accepting waits: send what is left, then exit
        self._abort = False  # deadline passed: exit now
        self._connected = False
        self._ever_connected = False
        self._outage_drops = 0
        self._outage_logged = False
        self._refusing = False
        self._worker = Worker("publisher", self._run)  # a stop interrupts a backoff wait
        self.last_published: dict[str, int] = {}  # camera id -> last frame id in Redis
        self.published: dict[str, int] = {}  # camera id -> frames published
        self.published_at: dict[str, float] = {}  # camera id -> unix time of its last XADD
        self.published_total = 0  # all cameras (read by the progress watch's thread)
        metrics.buffer_capacity.set(capacity)
        metrics.buffer_frames.set(0)
        metrics.redis_up.set(0)

    # -- camera side -------------------------------------------------------------------
    def put(self, frame: OutgoingFrame) -> None:
        """Queue a frame; when the buffer is full the oldest buffered frame is dropped."""
        with self._cond:
            while len(self._buf) >= self.capacity:
                self._drop(self._buf.popleft(), "buffer_full")
            self._buf.append(frame)
            self._gauge()
            self._cond.notify()

    @property
    def connected(self) -> bool:
        """True while the last Redis operation succeeded."""
        return self._connected

    def pending(self) -> int:
        """Frames buffered or in flight."""
        with self._cond:
            return len(self._buf) + self._inflight

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the publishing thread."""
        self._worker.start()

    def close(self, timeout: float) -> int:
        """Send what is buffered within ``timeout`` seconds, then stop.

        Returns the number of frames that could not be sent (counted as dropped, reason
        ``shutdown``).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._draining = True
            self._cond.notify_all()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._abort = True
            self._worker.request_stop()
            self._cond.notify_all()
        # A send in progress finishes or fails within the client's socket timeout.
        self._worker.join(10.0)
        with self._cond:
            left = len(self._buf)
            while self._buf:
                self._drop(self._buf.popleft(), "shutdown")
            self._gauge()
        if left:
            logger.warning(
                "frames not published before the shutdown deadline", extra={"frames": left}
            )
        return left

    # -- publishing thread -------------------------------------------------------------
    def _drop(self, frame: OutgoingFrame, reason: str) -> None:
        self.metrics.frames_dropped.labels(frame.camera_id, reason).inc()
        if reason == "buffer_full":
            self._outage_drops += 1

    def _gauge(self) -> None:
        self.metrics.buffer_frames.set(len(self._buf) + self._inflight)

    def _take(self) -> list[OutgoingFrame] | None:
        """Up to ``batch`` frames; None when the thread should exit."""
        with self._cond:
            while not self._buf:
                if self._draining or self._abort:
                    return None
                self._cond.wait(0.5)
            if self._abort:
                return None
            batch = [self._buf.popleft() for _ in range(min(self.batch, len(self._buf)))]
            self._inflight = len(batch)
            return batch

    def _requeue(self, batch: list[OutgoingFrame]) -> None:
        """Put an unsent batch back at the head (it is older than anything buffered) and
        keep the newest ``capacity`` frames."""
        with self._cond:
            self._inflight = 0
            self._buf.extendleft(reversed(batch))
            while len(self._buf) > self.capacity:
                self._drop(self._buf.popleft(), "buffer_full")
            self._gauge()

    def _done(self) -> None:
        with self._cond:
            self._inflight = 0
            self._gauge()

    def _connect(self) -> bool:
        try:
            self.client.ping()
            if self._on_connect is not None:
                self._on_connect(self.client)
        except LayoutMismatchError as exc:
            logger.error("stream layout mismatch; stopping", extra={"error": str(exc)})
            self._abort = True
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return False
        except Exception as exc:
            self._lost(exc)
            return False
        if self._ever_connected:
            self.metrics.redis_reconnects.inc()
            logger.info(
                "redis reachable again; publishing resumes",
                extra={"dropped_during_outage": self._outage_drops, "buffered": self.pending()},
            )
        else:
            logger.info("connected to redis")
        self._ever_connected = True
        self._connected = True
        self._outage_logged = False
        self._outage_drops = 0
        self._backoff.reset()
        self.metrics.redis_up.set(1)
        return True

    def _lost(self, exc: BaseException) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(
                "redis unreachable; buffering frames (oldest dropped when full)",
                extra={"error": str(exc), "capacity": self.capacity},
            )
        else:
            logger.debug("redis still unreachable", extra={"error": str(exc)})
        self._connected = False
        self.metrics.redis_up.set(0)

    def _refused(self, exc: BaseException) -> None:
        """Redis is up but refuses writes: keep the frames, back off, count the kind."""
        kind = classify(exc)
        self.metrics.redis_refusals.labels(kind).inc()
        self.metrics.redis_up.set(0)
        if not self._refusing:
            self._refusing = True
            logger.warning(
                "redis refuses frames; buffering them (oldest dropped when full)",
                extra={"kind": kind, "error": str(exc), "capacity": self.capacity},
            )

    def _send(self, batch: list[OutgoingFrame]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for frame in batch:
            fields: dict[Any, Any] = frame.fields  # redis-py's typing of field maps is narrow
            pipe.xadd(frame.stream, fields, maxlen=self.maxlen, approximate=True)
        results = pipe.execute(raise_on_error=False)
        refused: list[OutgoingFrame] = []
        cause: BaseException | None = None
        sent_at = time.time()
        for frame, result in zip(batch, results, strict=True):
            if isinstance(result, CONNECTION_ERRORS):
                raise result
            if isinstance(result, Exception) and is_fault(result):
                refused.append(frame)  # Redis will take it later: keep it, in order
                cause = cause or result
                continue
            if isinstance(result, Exception):
                self._drop(frame, "redis_error")
                logger.error(
                    "redis refused a frame",
                    extra={"camera_id": frame.camera_id, "error": str(result)},
                )
                continue
            self.metrics.frames_published.labels(frame.camera_id).inc()
            self.metrics.published_bytes.labels(frame.camera_id).inc(frame.nbytes)
            self.last_published[frame.camera_id] = frame.frame_id
            self.published[frame.camera_id] = self.published.get(frame.camera_id, 0) + 1
            self.published_at[frame.camera_id] = sent_at
            self.published_total += 1
        if cause is not None:
            raise WritesRefusedError(refused, cause)
        if self._refusing:
            self._refusing = False
            self._backoff.reset()
            self.metrics.redis_up.set(1)
            logger.info("redis accepts frames again", extra={"buffered": self.pending()})

    def _run(self, _worker: Worker) -> None:
        while not self._abort:
            if self._draining and self.pending() == 0:
                break
            if not self._connected and not self._connect():
                if not self._abort:
                    self._worker.wait(self._backoff.next())
                continue
            batch = self._take()
            if batch is None:
                break
            try:
                self._send(batch)
            except CONNECTION_ERRORS as exc:
                self._requeue(batch)
                self._lost(exc)
                continue
            except WritesRefusedError as exc:
                self._requeue(exc.frames)
                self._refused(exc.cause)
                self._worker.wait(self._backoff.next())
                continue
            except Exception:
                logger.exception("unexpected error while publishing; batch dropped")
                for frame in batch:
                    self._drop(frame, "redis_error")
                self._done()
                self._worker.wait(self._backoff.next())
                continue
            self._done()
