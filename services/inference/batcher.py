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

from facemask.core.preprocess import ImageDecodeError, decode_image, preprocess
from facemask.core.types import Detection
from facemask.detector import Detector

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

    detections: list[Detection]
    width: int
    height: int
    status: str = "ok"  # ok | skipped
    reason: str = ""
    queue_seconds: float = 0.0
    decode_seconds: float = 0.0
    compute_seconds: float = 0.0
    batch_size: int = 0
    model_runs: int = 0


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
    future: Future[JobResult] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    ready: float = 0.0
    decode_seconds: float = 0.0
    tensor: np.ndarray | None = None
    width: int = 0
    height: int = 0


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
        max_queue_size: int = 256,
        decode_workers: int = 2,
        decode_reduce: str = "auto",
        max_pixels: int = 64_000_000,
        on_batch: BatchObserver | None = None,
        on_job: JobObserver | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        runtime_max = getattr(detector.runtime, "max_batch_size", None)
        self.detector = detector
        self.max_batch_size = min(max_batch_size, runtime_max or max_batch_size)
        self.max_queue_delay = max_queue_delay
        self.max_queue_size = max_queue_size
        self.decode_reduce = decode_reduce
        self.max_pixels = max_pixels
        self.on_batch = on_batch
        self.on_job = on_job
        self._ready: queue.Queue[Job | None] = queue.Queue()
        self._admitted = 0
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
        job.future.add_done_callback(self._release)
        self._pool.submit(self._decode, job)
        return job.future

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
            image = decode_image(job.data, reduce=self.decode_reduce, max_pixels=self.max_pixels)
            if job.declared_size and job.declared_size != (image.width, image.height):
                raise ImageDecodeError(
                    "size_mismatch",
                    f"declared {job.declared_size[0]}x{job.declared_size[1]}, "
                    f"image is {image.width}x{image.height}",
                )
            job.tensor = preprocess(image.rgb)
            job.width, job.height = image.width, image.height
        except ImageDecodeError as exc:
            job.future.set_exception(exc)
            return
        except Exception as exc:
            logger.exception("decode failed")
            job.future.set_exception(ImageDecodeError("corrupt_image", str(exc)))
            return
        job.decode_seconds = time.monotonic() - start
        job.ready = time.monotonic()
        job.data = b""  # the bytes are no longer needed; free them early
        self._ready.put(job)

    # -- the model thread ------------------------------------------------------------

    def _expired(self, job: Job, now: float) -> bool:
        if job.deadline is not None and now > job.deadline:
            job.future.set_exception(DeadlineExpiredError("deadline passed while queued"))
            return True
        if job.max_age is not None and job.capture_ts is not None:
            age = time.time() - job.capture_ts
            if age > job.max_age:
                job.future.set_result(
                    JobResult(
                        [],
                        job.width,
                        job.height,
                        status="skipped",
                        reason="too_old",
                        queue_seconds=now - job.submitted,
                        decode_seconds=job.decode_seconds,
                    )
                )
                return True
        return False

    def _collect(self, first: Job) -> list[Job]:
        batch = [first]
        flush_at = first.ready + self.max_queue_delay
        while len(batch) < self.max_batch_size:
            try:
                job = self._ready.get_nowait()
            except queue.Empty:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._ready.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:  # shutdown sentinel: put it back for the loop
                self._ready.put(None)
                break
            batch.append(job)
        now = time.monotonic()
        return [job for job in batch if not self._expired(job, now)]

    def _model_loop(self) -> None:
        while True:
            first = self._ready.get()
            if first is None:
                return
            batch = self._collect(first)
            if batch:
                self._run(batch)

    def _run(self, batch: Sequence[Job]) -> None:
        start = time.monotonic()
        try:
            tensors = np.stack([job.tensor for job in batch])  # type: ignore[misc]
            loc, cls = self.detector.infer(tensors)
            results = [
                self.detector.postprocess(loc[i], cls[i], conf=job.conf, iou=job.iou)
                for i, job in enumerate(batch)
            ]
        except Exception as exc:
            logger.exception("model call failed", extra={"batch_size": len(batch)})
            for job in batch:
                job.future.set_exception(exc)
            return
        compute = time.monotonic() - start
        if self.on_batch is not None:
            self.on_batch(len(batch), compute)
        for job, detections in zip(batch, results, strict=True):
            job.tensor = None
            if self.on_job is not None:
                self.on_job(start - job.ready, job.decode_seconds)
            job.future.set_result(
                JobResult(
                    detections,
                    job.width,
                    job.height,
                    queue_seconds=start - job.ready,
                    decode_seconds=job.decode_seconds,
                    compute_seconds=compute,
                    batch_size=len(batch),
                    model_runs=1,
                )
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
