"""Dynamic batching: one queue feeding the model, shared by gRPC requests and stream frames.

Work flows in three stages:

1. :meth:`DynamicBatcher.submit` (or :meth:`~DynamicBatcher.submit_all`, all or none)
   admits a job (encoded image bytes plus its options) if the model inputs and the bytes
   it costs still fit (``max_queue_size``, ``max_queue_bytes``), else raises
   :class:`QueueFullError` (:class:`RequestTooLargeError` when it could never fit).
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

Memory is bounded by construction (issue 13). Admission is counted in what a job costs,
read from the image header before anything is decoded (:func:`job_cost`): its model
inputs (an R x C grid: R*C+1; ``max_queue_size`` is in these units) and its bytes (the
encoded bytes plus the decoded pixels; ``max_queue_bytes``). Grids have at most
``max_tiles`` tiles. A tiled job keeps only its decoded uint8 frame: each tile's float32
input is made when its batch is assembled, written straight into the batch array, so the
tensors alive at once are those of one batch, not those of every queued tile. The budget
a job reserved is given back when its future resolves (result, error, cancel, expiry).

Model swaps (rolling updates, :mod:`services.inference.models`): :meth:`DynamicBatcher.swap`
hands the model thread another detector, loaded and warmed elsewhere; the model thread
takes it before its next batch, so every batch runs on one model and every
:class:`JobResult` names the version that produced it (``model``). A tiled job whose items
straddle the swap runs its earlier windows again on the new model: a frame's detections
never mix two models.
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

from facemask.core.preprocess import (
    INPUT_SIZE,
    MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    decoded_bytes,
    header_size,
    preprocess,
    preprocess_into,
)
from facemask.core.tiling import (
    MAX_TILES,
    TileSpec,
    TileSpecError,
    Window,
    crop,
    map_detections,
    tile_windows,
)
from facemask.core.types import Detections
from facemask.model.detector import Detector

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """Admitting the work would exceed ``max_queue_size`` model inputs or
    ``max_queue_bytes`` bytes (try again later)."""


class RequestTooLargeError(QueueFullError):
    """The work costs more than the whole queue holds: it can never be admitted."""


class InvalidJobError(ValueError):
    """A job that cannot be run as asked (e.g. a tile grid over ``max_tiles``)."""


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
    model: str = ""
    """The model version that ran it (empty: not run)."""

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
    inputs: int = 0  # model inputs its admission reserves (tiles + full frame); 0: not costed
    cost_bytes: int = 0  # bytes its admission reserves (encoded + decoded pixels)
    image: np.ndarray | None = None  # a tiled job's decoded frame, until its last tile ran


@dataclass(frozen=True, slots=True)
class JobCost:
    """What admitting a job reserves: model inputs and bytes."""

    inputs: int
    nbytes: int


def job_cost(
    job: Job,
    *,
    max_tiles: int = MAX_TILES,
    decode_reduce: str = "auto",
    max_pixels: int = MAX_PIXELS,
) -> JobCost:
    """The model inputs and bytes ``job`` will need, from its image header alone (nothing
    is decoded): a tile grid of R x C costs R*C+1 inputs (automatic grids resolved for the
    size the header declares); bytes are the encoded bytes plus the decoded pixels. Bytes
    whose header cannot be read, or declares more than ``max_pixels``, cost one input and
    their own length: their decode fails on the header (``too_large``, ...), decoding
    nothing.

    Raises :class:`InvalidJobError` for a fixed grid over ``max_tiles``.
    """
    size = header_size(job.data)
    if size is not None and size[0] * size[1] > max_pixels:
        size = None
    inputs = 1
    if job.tiles is not None:
        try:
            job.tiles.check(max_tiles)
        except TileSpecError as exc:
            raise InvalidJobError(str(exc)) from None
        if size is not None:
            inputs = job.tiles.inputs(*size, max_tiles)
    decoded = 0
    if size is not None:
        reduce, min_size = decode_options(job.tiles, decode_reduce)
        decoded = decoded_bytes(job.data, reduce=reduce, min_size=min_size, size=size)
    return JobCost(inputs, len(job.data) + decoded)


def decode_options(tiles: TileSpec | None, decode_reduce: str) -> tuple[str, tuple[int, int]]:
    """``(reduce, min_size)`` of a job's decode (:func:`decode_image`): the model input
    size, or what its tiles need (a tile grid that needs every pixel decodes in full).
    Admission reserves the memory of exactly this decode."""
    min_size = INPUT_SIZE if tiles is None else tiles.decode_min_size
    if min_size is None:
        return "full", INPUT_SIZE
    return decode_reduce, min_size


@dataclass(slots=True)
class _Item:
    """One batch item: a job's whole frame (``index`` 0 when untiled) or one of its tiles.

    ``tensor`` is the preprocessed input of an untiled job; a tile's is None: it is made
    from the job's decoded frame when its batch is assembled.
    """

    job: Job
    index: int
    tensor: np.ndarray | None


def job_size(job: Job) -> tuple[int, int]:
    """``(width, height)`` of a decoded job's original image."""
    return job.width, job.height


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


class _Wake:
    """Queue marker that wakes the model thread for a pending swap (see :meth:`swap`)."""


_WAKE = _Wake()


@dataclass(slots=True)
class _Swap:
    """A detector waiting to replace the running one; ``done`` resolves with the old one."""

    detector: Detector
    version: str
    done: Future[Detector] = field(default_factory=Future)


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
        max_pixels: int = MAX_PIXELS,
        on_batch: BatchObserver | None = None,
        on_job: JobObserver | None = None,
        max_queue_bytes: int = 1 << 30,
        max_tiles: int = MAX_TILES,
        model_version: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_queue_size < 1 or max_queue_bytes < 1:
            raise ValueError("max_queue_size and max_queue_bytes must be >= 1")
        if not 1 <= max_tiles <= MAX_TILES:
            raise ValueError(f"max_tiles must be in 1..{MAX_TILES}")
        self.detector = detector
        if model_version is None:  # a stand-in detector (tests) may not know its version
            model_version = getattr(detector, "model_version", "")
        self.model_version = model_version
        """The version of :attr:`detector` (each :class:`JobResult` says which ran it)."""
        self._max_batch_setting = max_batch_size
        self.max_batch_size = batch_limit(max_batch_size, detector.runtime)
        self.max_queue_delay = max_queue_delay
        self.max_decode_wait = max_decode_wait
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.max_tiles = max_tiles
        self.decode_reduce = decode_reduce
        self.max_pixels = max_pixels
        self.on_batch = on_batch
        self.on_job = on_job
        self._ready: queue.Queue[_Item | _Wake | None] = queue.Queue()
        self._swap: _Swap | None = None
        self._partial: dict[int, Job] = {}  # jobs with windows run and windows to go
        self._admitted = 0
        self._inputs = 0
        self._bytes = 0
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

    @property
    def queued_inputs(self) -> int:
        """Model inputs reserved by the jobs admitted (at most ``max_queue_size``)."""
        return self._inputs

    @property
    def model_alive(self) -> bool:
        """Whether the model thread runs (it is never restarted: its death is fatal)."""
        return self._thread.is_alive()

    @property
    def queued_bytes(self) -> int:
        """Bytes reserved by the jobs admitted (at most ``max_queue_bytes``)."""
        return self._bytes

    def cost(self, job: Job) -> JobCost:
        """What admitting ``job`` reserves (:func:`job_cost` with this batcher's limits),
        worked out once per job and kept in it (a stream frame submitted again while the
        queue is full is not parsed again); raises :class:`InvalidJobError` for a tile grid
        over ``max_tiles``."""
        if not job.inputs:
            cost = job_cost(
                job,
                max_tiles=self.max_tiles,
                decode_reduce=self.decode_reduce,
                max_pixels=self.max_pixels,
            )
            job.inputs, job.cost_bytes = cost.inputs, cost.nbytes
        return JobCost(job.inputs, job.cost_bytes)

    def submit(self, job: Job) -> Future[JobResult]:
        """Admit a job; its future resolves with a :class:`JobResult` or an exception.

        Raises only for what may pass (:class:`QueueFullError`: retry later;
        :class:`ShuttingDownError`). A job that can never run is not admitted and its
        future fails at once, nothing decoded: with ``ImageDecodeError("too_large")``
        when it costs more than the whole queue (a stream frame gets dead-lettered, it
        does not retry forever), or :class:`InvalidJobError`.
        """
        try:
            return self.submit_all([job])[0]
        except RequestTooLargeError as exc:
            _resolve(job.future, ImageDecodeError("too_large", str(exc)))
        except InvalidJobError as exc:
            _resolve(job.future, exc)
        return job.future

    def submit_all(self, jobs: Sequence[Job]) -> list[Future[JobResult]]:
        """Admit every job or none (a gRPC request's images): their costs are summed
        from the headers before anything is decoded.

        Raises :class:`RequestTooLargeError` if they could never fit in the queue,
        :class:`QueueFullError` if they do not fit now, :class:`InvalidJobError` for a job
        that cannot run as asked, :class:`ShuttingDownError` while draining.
        """
        costs = [self.cost(job) for job in jobs]
        inputs = sum(c.inputs for c in costs)
        nbytes = sum(c.nbytes for c in costs)
        if inputs > self.max_queue_size or nbytes > self.max_queue_bytes:
            raise RequestTooLargeError(
                f"{len(jobs)} image(s) need {inputs} model inputs and {nbytes} bytes; the "
                f"queue holds at most {self.max_queue_size} inputs (max_queue_size, tiles "
                f"included) and {self.max_queue_bytes} bytes (max_queue_bytes)"
            )
        with self._lock:
            if not self._accepting:
                raise ShuttingDownError("the inference service is shutting down")
            if (
                self._inputs + inputs > self.max_queue_size
                or self._bytes + nbytes > self.max_queue_bytes
            ):
                raise QueueFullError(
                    f"{self._inputs} model inputs and {self._bytes} bytes queued "
                    f"(max_queue_size={self.max_queue_size}, "
                    f"max_queue_bytes={self.max_queue_bytes}); {inputs} more do not fit"
                )
            self._admitted += len(jobs)
            self._inputs += inputs
            self._bytes += nbytes
            self._decoding += len(jobs)
        for job in jobs:
            job.future.add_done_callback(lambda _f, job=job: self._release(job))  # type: ignore[misc]
            self._pool.submit(self._decode_counted, job)
        return [job.future for job in jobs]

    def _decode_counted(self, job: Job) -> None:
        try:
            self._decode(job)
        finally:
            with self._lock:
                self._decoding -= 1

    def _release(self, job: Job) -> None:
        job.image = None  # a resolved job's tiles are dropped when they reach a batch
        with self._lock:
            self._admitted -= 1
            self._inputs -= job.inputs
            self._bytes -= job.cost_bytes
            if self._admitted == 0:
                self._idle.notify_all()

    def _decode(self, job: Job) -> None:
        start = time.monotonic()
        if self._expired(job, start):  # do not spend decode time on a frame already stale
            return
        try:
            reduce, min_size = decode_options(job.tiles, self.decode_reduce)
            image = decode_image(
                job.data,
                reduce=reduce,
                max_pixels=self.max_pixels,
                min_size=min_size,
                expect_size=job.declared_size,
            )
            job.width, job.height = image.width, image.height
            # Untiled: one window. The grid never outgrows what admission reserved (only
            # an automatic grid of an EXIF-turned image could: its last tiles are left out).
            windows = tile_windows(image.width, image.height, job.tiles, self.max_tiles)
            if job.inputs and len(windows) > job.inputs:
                windows = windows[: job.inputs]
            job.windows = windows
            if len(windows) == 1:
                rgb = crop(image.rgb, windows[0], *job_size(job))
                items = [_Item(job, 0, preprocess(rgb, self.detector.input_size))]
            else:  # tiles: inputs made per batch from the decoded frame (module docstring)
                job.image = image.rgb
                items = [_Item(job, index, None) for index in range(len(windows))]
            del image
        except ImageDecodeError as exc:
            _resolve(job.future, exc)
            return
        except Exception as exc:
            logger.exception("decode failed")
            _resolve(job.future, ImageDecodeError("corrupt_image", str(exc)))
            return
        job.window_detections = [None] * len(items)
        job.pending = len(items)
        job.decode_seconds = time.monotonic() - start
        job.ready = time.monotonic()
        job.data = b""  # the bytes are no longer needed; free them early
        if job.future.done():  # cancelled or expired while decoding
            job.image = None
            return
        for item in items:
            self._ready.put(item)

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
            if isinstance(item, _Wake):  # a swap is pending: it comes before the next batch
                break
            assert isinstance(item, _Item)
            batch.append(item)
        now = time.monotonic()
        return [item for item in batch if not self._expired(item.job, now)]

    def _model_loop(self) -> None:
        while True:
            if self._swap is not None:
                self._apply_swap()
            first = self._ready.get()
            if first is None:
                return
            if isinstance(first, _Wake):
                continue
            batch = self._collect(first)
            if batch:
                self._run(batch)

    def _inputs_of(self, batch: list[_Item]) -> np.ndarray:
        """The float32 batch array; tiles are preprocessed into it here (lazily), and
        items whose job was resolved meanwhile (its frame released) are dropped."""
        live: list[tuple[_Item, np.ndarray | None]] = []
        for item in batch:
            source = item.tensor if item.tensor is not None else item.job.image
            if source is not None:
                live.append((item, source))
        batch[:] = [item for item, _ in live]
        size = self.detector.input_size  # the model's, read from its file
        out = np.empty((len(live), size[1], size[0], 3), dtype=np.float32)
        for row, (item, source) in enumerate(live):
            if item.tensor is not None:
                out[row] = item.tensor
            else:
                job = item.job
                assert source is not None
                preprocess_into(crop(source, job.windows[item.index], *job_size(job)), out[row])
        return out

    def _run(self, items: Sequence[_Item]) -> None:
        start = time.monotonic()
        batch = list(items)
        try:
            tensors = self._inputs_of(batch)
            if not batch:
                return
            loc, cls = self.detector.infer(tensors)
            del tensors
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
                self._track_partial(job)
                continue
            self._finish(job, len(batch))

    def _track_partial(self, job: Job) -> None:
        """Remember a job with windows run and windows to go (a swap restarts it) until
        its future resolves, however it resolves (an expired job never finishes)."""
        key = id(job)
        if key not in self._partial:
            self._partial[key] = job
            job.future.add_done_callback(lambda _f: self._partial.pop(key, None))

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
        job.image = None
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
                model=self.model_version,
            ),
        )

    # -- model swaps -----------------------------------------------------------------

    def swap(self, detector: Detector, version: str) -> Future[Detector]:
        """Run ``detector`` (model ``version``, loaded and warmed by the caller) from the
        next batch on (the batch running now finishes on the old one).

        The returned future resolves with the detector it replaced once the model thread
        has switched (the caller closes it: nothing runs on it any more). A swap still
        pending when another comes, or when the batcher closes, resolves with its own,
        never-used detector."""
        request = _Swap(detector, version)
        with self._lock:
            superseded, self._swap = self._swap, request
        if superseded is not None:
            superseded.done.set_result(superseded.detector)
        self._ready.put(_WAKE)
        return request.done

    def _apply_swap(self) -> None:
        """Model thread, between batches: switch to the pending detector. Tiled jobs with
        windows already run on the old model are queued again whole."""
        with self._lock:
            request, self._swap = self._swap, None
        if request is None:
            return
        old = self.detector
        self.detector = request.detector
        self.model_version = request.version
        self.max_batch_size = batch_limit(self._max_batch_setting, request.detector.runtime)
        requeued = 0
        partial, self._partial = list(self._partial.values()), {}
        for job in partial:
            if job.future.done():
                continue
            again = [i for i, d in enumerate(job.window_detections) if d is not None]
            for index in again:
                job.window_detections[index] = None
                self._ready.put(_Item(job, index, None))
            job.pending += len(again)
            requeued += 1
        logger.info("model swapped", extra={"version": request.version, "requeued_jobs": requeued})
        request.done.set_result(old)

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
        with self._lock:
            pending, self._swap = self._swap, None
        if pending is not None:
            pending.done.set_result(pending.detector)
