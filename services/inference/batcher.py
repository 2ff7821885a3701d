"""Dynamic batching: one queue feeding the model, shared by gRPC requests and stream frames.

Work flows in three stages:

1. :meth:`DynamicBatcher.submit` admits a job (encoded image bytes plus its options) if
   fewer than ``max_queue_size`` jobs are queued, else raises :class:`QueueFullError`.
2. A thread pool decodes and resizes the image (off the model thread: the model never
   waits for decode) and puts the preprocessed tensor on the model queue.
3. The model thread takes the oldest tensor, waits at most ``max_queue_delay`` (counted
   from when that tensor became ready) for up to ``max_batch_size`` tensors, drops the
   expired ones (deadline passed, or frame older than its ``max_age``), runs the whole
   batch in one model call and resolves every job's future with its own result.

Like Triton's dynamic batcher, a lone request waits at most ``max_queue_delay``; under
load batches fill up at once and the delay is never paid.

A job with a tile spec (:class:`facemask.core.tiling.TileSpec`) becomes several batch
items: the full frame and each tile, preprocessed separately. Items of any jobs share
batches; the job resolves when its last item has run, with the detections of every window
mapped back to the frame and merged by NMS (``JobResult.model_runs`` = its items). Tiling
thus costs throughput (more items per frame), not a longer model call per item.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from facemask.core.preprocess import INPUT_SIZE, ImageDecodeError, decode_image, preprocess
from facemask.core.tiling import TileSpec, Window, crop, map_detections, tile_windows
from facemask.core.types import Detections
from facemask.model.detector import Detector

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The batcher holds ``max_queue_size`` jobs already."""


class DeadlineExpiredError(TimeoutError):
    """The job's deadline passed before it reached the model."""


class ShuttingDownError(RuntimeError):
    """The batcher no longer accepts work."""


@dataclass(slots=True)
class JobResult:
    """What a job produced: detections of the original image, or why it was skipped."""

    detections: Detections
    width: int
    height: int
    status: str = "ok"  # ok | skipped
    reason: str = ""
    queue_seconds: float = 0.0
    decode_seconds: float = 0.0
    compute_seconds: float = 0.0
    batch_size: int = 0
    model_runs: int = 0

    @classmethod
    def too_old(
        cls, width: int, height: int, *, queue_seconds: float = 0.0, decode_seconds: float = 0.0
    ) -> JobResult:
        """The result of a frame not run because it is older than its ``max_age``."""
        return cls(
            Detections.empty(),
            width,
            height,
            status="skipped",
            reason="too_old",
            queue_seconds=queue_seconds,
            decode_seconds=decode_seconds,
        )


@dataclass(slots=True)
class Job:
    """One image to detect in."""

    data: bytes
    conf: float
    iou: float
    camera_id: str = ""
    source: str = "grpc"
    deadline: float | None = None  # time.monotonic() deadline
    capture_ts: float | None = None  # wall-clock capture time (stream frames)
    max_age: float | None = None  # skip when older than this at batching time
    declared_size: tuple[int, int] | None = None
    tiles: TileSpec | None = None  # full frame plus tiles; None: the frame alone
    future: Future[JobResult] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    ready: float = 0.0
    decode_seconds: float = 0.0
    width: int = 0
    height: int = 0
    windows: list[Window] = field(default_factory=list)
    window_detections: list[Detections | None] = field(default_factory=list)
    pending: int = 0
    started: float | None = None  # when its first item entered the model
    compute_seconds: float = 0.0


@dataclass(slots=True)
class _Item:
    """One batch item: a job's whole frame (``index`` 0 when untiled) or one of its tiles."""

    job: Job
    index: int
    tensor: np.ndarray | None


def batch_limit(max_batch_size: int, runtime: object) -> int:
    """The largest batch the batcher forms: ``max_batch_size``, capped by the runtime's own
    ``max_batch_size`` when it has one."""
    return min(max_batch_size, getattr(runtime, "max_batch_size", None) or max_batch_size)


def _resolve(future: Future[JobResult], result: JobResult | BaseException) -> None:
    """Resolve a future unless it is already done (expired or cancelled by its caller)."""
    if future.done():
        return
    try:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: cancelled between the check and the set
        logger.debug("job future already resolved")


BatchObserver = Callable[[int, float], None]
JobObserver = Callable[[float, float], None]


class DynamicBatcher:
    """Batches preprocessed images from any number of producers into model calls."""

    def __init__(
        self,
        detector: Detector,
        *,
        max_batch_size: int = 32,
        max_queue_delay: float = 0.005,
        max_decode_wait: float = 0.025,
        max_queue_size: int = 256,
        decode_workers: int = 2,
        decode_reduce: str = "auto",
        max_pixels: int = 64_000_000,
        on_batch: BatchObserver | None = None,
        on_job: JobObserver | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.detector = detector
        self.max_batch_size = batch_limit(max_batch_size, detector.runtime)
        self.max_queue_delay = max_queue_delay
        self.max_decode_wait = max_decode_wait
        self.max_queue_size = max_queue_size
        self.decode_reduce = decode_reduce
        self.max_pixels = max_pixels
        self.on_batch = on_batch
        self.on_job = on_job
        self._ready: queue.Queue[_Item | None] = queue.Queue()
        self._admitted = 0
        self._decoding = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._accepting = True
        self._pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
        self._thread = threading.Thread(target=self._model_loop, name="model", daemon=True)
        self._thread.start()

    # -- admission -------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Jobs admitted and not yet resolved (decoding, queued or in the model)."""
        return self._admitted

    def submit(self, job: Job) -> Future[JobResult]:
        """Admit a job; its future resolves with a :class:`JobResult` or an exception."""
        with self._lock:
            if not self._accepting:
                raise ShuttingDownError("the inference service is shutting down")
            if self._admitted >= self.max_queue_size:
                raise QueueFullError(
                    f"{self._admitted} images queued (max_queue_size={self.max_queue_size})"
                )
            self._admitted += 1
            self._decoding += 1
        job.future.add_done_callback(self._release)
        self._pool.submit(self._decode_counted, job)
        return job.future

    def _decode_counted(self, job: Job) -> None:
        try:
            self._decode(job)
        finally:
            with self._lock:
                self._decoding -= 1

    def _release(self, _: Future[JobResult]) -> None:
        with self._lock:
            self._admitted -= 1
            if self._admitted == 0:
                self._idle.notify_all()

    def _decode(self, job: Job) -> None:
        start = time.monotonic()
        if self._expired(job, start):  # do not spend decode time on a frame already stale
            return
        try:
            min_size = INPUT_SIZE if job.tiles is None else job.tiles.decode_min_size
            image = decode_image(
                job.data,
                reduce="full" if min_size is None else self.decode_reduce,
                max_pixels=self.max_pixels,
                min_size=min_size or INPUT_SIZE,
                expect_size=job.declared_size,
            )
            job.width, job.height = image.width, image.height
            job.windows = tile_windows(image.width, image.height, job.tiles)  # untiled: 1
            tensors = [
                preprocess(crop(image.rgb, window, image.width, image.height))
                for window in job.windows
            ]
        except ImageDecodeError as exc:
            _resolve(job.future, exc)
            return
        except Exception as exc:
            logger.exception("decode failed")
            _resolve(job.future, ImageDecodeError("corrupt_image", str(exc)))
            return
        job.window_detections = [None] * len(tensors)
        job.pending = len(tensors)
        job.decode_seconds = time.monotonic() - start
        job.ready = time.monotonic()
        job.data = b""  # the bytes are no longer needed; free them early
        for index, tensor in enumerate(tensors):
            self._ready.put(_Item(job, index, tensor))

    # -- the model thread ------------------------------------------------------------

    def _expired(self, job: Job, now: float) -> bool:
        if job.future.done():  # another item of the job expired, or its caller cancelled
            return True
        if job.deadline is not None and now > job.deadline:
            _resolve(job.future, DeadlineExpiredError("deadline passed while queued"))
            return True
        if job.max_age is not None and job.capture_ts is not None:
            age = time.time() - job.capture_ts
            if age > job.max_age:
                _resolve(
                    job.future,
                    JobResult.too_old(
                        job.width,
                        job.height,
                        queue_seconds=now - job.submitted,
                        decode_seconds=job.decode_seconds,
                    ),
                )
                return True
        return False

    def _collect(self, first: _Item) -> list[_Item]:
        """The batch that starts with ``first``.

        Waits up to ``max_queue_delay`` for ready images; past that, keeps waiting (up to
        ``max_decode_wait``) only while admitted images are still being decoded, so under
        load the model runs full, efficient batches instead of whatever one decode thread
        finished last; at low load nothing is being decoded, so nothing waits longer than
        ``max_queue_delay``.
        """
        batch = [first]
        flush_at = first.job.ready + self.max_queue_delay
        hard_stop = first.job.ready + max(self.max_queue_delay, self.max_decode_wait)
        while len(batch) < self.max_batch_size:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                remaining = flush_at - now
                if remaining <= 0 and self._decoding > 0 and now < hard_stop:
                    remaining = min(0.002, hard_stop - now)
                if remaining <= 0:
                    break
                try:
                    item = self._ready.get(timeout=remaining)
                except queue.Empty:
                    continue  # re-check: the delay passed, or a decode is still running
            if item is None:  # shutdown sentinel: put it back for the loop
                self._ready.put(None)
                break
            batch.append(item)
        now = time.monotonic()
        return [item for item in batch if not self._expired(item.job, now)]

    def _model_loop(self) -> None:
        while True:
            first = self._ready.get()
            if first is None:
                return
            batch = self._collect(first)
            if batch:
                self._run(batch)

    def _run(self, batch: Sequence[_Item]) -> None:
        start = time.monotonic()
        try:
            tensors = np.stack([item.tensor for item in batch])  # type: ignore[misc]
            loc, cls = self.detector.infer(tensors)
            results = [
                self.detector.postprocess(loc[i], cls[i], conf=item.job.conf, iou=item.job.iou)
                for i, item in enumerate(batch)
            ]
        except Exception as exc:
            logger.exception("model call failed", extra={"batch_size": len(batch)})
            for item in batch:
                item.tensor = None
                _resolve(item.job.future, exc)
            return
        compute = time.monotonic() - start
        if self.on_batch is not None:
            self.on_batch(len(batch), compute)
        seen: set[int] = set()
        for item, detections in zip(batch, results, strict=True):
            job = item.job
            item.tensor = None
            job.window_detections[item.index] = detections
            job.pending -= 1
            if id(job) not in seen:  # a job's items in one batch share its compute time
                seen.add(id(job))
                job.compute_seconds += compute
            if job.started is None:
                job.started = start
            if job.pending > 0:
                continue
            self._finish(job, len(batch))

    def _finish(self, job: Job, batch_size: int) -> None:
        """All items of ``job`` have run: merge its windows and resolve its future."""
        assert job.started is not None
        queue_seconds = job.started - job.ready
        try:
            detections = map_detections(  # one (full-frame) window: passed through as is
                [Detections.empty() if d is None else d for d in job.window_detections],
                job.windows,
                job.width,
                job.height,
                iou=job.iou,
            )
        except Exception as exc:
            logger.exception("merging tiles failed")
            _resolve(job.future, exc)
            return
        job.window_detections = []
        if self.on_job is not None:
            self.on_job(queue_seconds, job.decode_seconds)
        _resolve(
            job.future,
            JobResult(
                detections,
                job.width,
                job.height,
                queue_seconds=queue_seconds,
                decode_seconds=job.decode_seconds,
                compute_seconds=job.compute_seconds,
                batch_size=batch_size,
                model_runs=len(job.windows),
            ),
        )

    # -- lifecycle -------------------------------------------------------------------

    def drain(self, timeout: float) -> bool:
        """Stop admitting work and wait until every admitted job is resolved."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._accepting = False
            while self._admitted > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Drain, then stop the threads."""
        self.drain(timeout)
        self._ready.put(None)
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
