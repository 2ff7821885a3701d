"""Dynamic batching: one queue feeding the model, shared by gRPC requests and stream frames.

Work flows in three stages:

1. :meth:`DynamicBatcher.submit` (or :meth:`~DynamicBatcher.submit_all`, all or none)
   admits a job (encoded image bytes plus its options) if the model inputs and the bytes
   it costs still fit (``max_queue_size``, ``max_queue_bytes``), else raises
   :class:`QueueFullError` (:class:`RequestTooLargeError` when it could never fit).
2. A thread pool decodes (JPEGs at a reduced scale, by libjpeg's scaled IDCT, when the
   frame is at least twice the model input) and resizes the image to the model input,
   still uint8 (off the model thread: the model never waits for decode), and puts it on
   the model queue.
3. The model thread takes the oldest input, waits at most ``max_queue_delay`` (counted
   from when that input became ready) for up to ``max_batch_size`` inputs, drops the
   expired ones (deadline passed, or frame older than its ``max_age``), scales the rest
   to float32 straight into the batch array (no per-frame float tensor, no copy) and runs
   the whole batch in one model call.
4. The post-processing thread decodes the boxes, runs NMS and resolves every job's
   future with its own result, while the model thread already runs the next batch: the
   model thread does nothing per frame but scale its input.

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
``max_tiles`` tiles. An untiled job keeps only its resized uint8 input, a tiled job only
its decoded uint8 frame: every float32 input is made when its batch is assembled, written
straight into the batch array, so the float tensors alive at once are those of the batch
in the model (and the one being assembled), not those of every queued frame or tile. The
budget a job reserved is given back when its future resolves (result, error, cancel,
expiry).

Model swaps (rolling updates, :mod:`services.inference.models`): :meth:`DynamicBatcher.swap`
hands the model thread another detector, loaded and warmed elsewhere; the model thread
takes it before its next batch, so every batch runs on one model and every
:class:`JobResult` names the version that produced it (``model``). A tiled job whose items
straddle the swap runs its earlier windows again on the new model: a frame's detections
never mix two models. A swap waits for the batches the model already ran to be
post-processed, so the jobs it restarts are known.
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
    preprocess_into,
    resize_input,
    scale_into,
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
    image: np.ndarray | None = None  # a tiled job's decoded frame (BGR), until its last tile ran


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

    ``pixels`` is the resized uint8 RGB input of an untiled job; a tile's is None: it is
    made from the job's decoded frame when its batch is assembled.
    """

    job: Job
    index: int
    pixels: np.ndarray | None


@dataclass(slots=True)
class _Ran:
    """A batch the model ran, on its way to the post-processing thread."""

    items: list[_Item]
    loc: np.ndarray
    cls: np.ndarray
    start: float
    compute: float
    detector: Detector
    """The model that ran it (its post-processing; a swap may have come since)."""
    version: str


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
        self._ran: queue.Queue[_Ran | None] = queue.Queue()
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
        self._post = threading.Thread(target=self._post_loop, name="postprocess", daemon=True)
        self._thread.start()
        self._post.start()

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
        """Whether the model and post-processing threads run (they are never restarted:
        their death is fatal)."""
        return self._thread.is_alive() and self._post.is_alive()

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
            image = decode_image(  # BGR: turned to RGB after the resize, on fewer pixels
                job.data,
                reduce=reduce,
                max_pixels=self.max_pixels,
                min_size=min_size,
                expect_size=job.declared_size,
                bgr=True,
            )
            job.width, job.height = image.width, image.height
            # Untiled: one window. The grid never outgrows what admission reserved (only
            # an automatic grid of an EXIF-turned image could: its last tiles are left out).
            windows = tile_windows(image.width, image.height, job.tiles, self.max_tiles)
            if job.inputs and len(windows) > job.inputs:
                windows = windows[: job.inputs]
            job.windows = windows
            if len(windows) == 1:
                window = crop(image.rgb, windows[0], *job_size(job))
                pixels = resize_input(window, self.detector.input_size, bgr=True)
                items = [_Item(job, 0, pixels)]
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
        try:
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
        finally:
            self._ran.put(None)  # the post-processing thread ends after the last batch

    def _inputs_of(self, batch: list[_Item]) -> np.ndarray:
        """The float32 batch array, every input scaled (tiles also cropped and resized)
        straight into its row; items whose job was resolved meanwhile (its frame
        released) are dropped."""
        live: list[tuple[_Item, np.ndarray | None]] = []
        for item in batch:
            source = item.pixels if item.pixels is not None else item.job.image
            if source is not None:
                live.append((item, source))
        batch[:] = [item for item, _ in live]
        size = self.detector.input_size  # the model's, read from its file
        out = np.empty((len(live), size[1], size[0], 3), dtype=np.float32)
        for row, (item, source) in enumerate(live):
            assert source is not None
            if item.pixels is not None:
                scale_into(source, out[row])
                item.pixels = None
            else:
                job = item.job
                window = job.windows[item.index]
                preprocess_into(crop(source, window, *job_size(job)), out[row], bgr=True)
        return out

    def _run(self, items: Sequence[_Item]) -> None:
        """Run one batch in the model; its post-processing goes to the other thread."""
        start = time.monotonic()
        batch = list(items)
        try:
            tensors = self._inputs_of(batch)
            if not batch:
                return
            loc, cls = self.detector.infer(tensors)
            del tensors
        except Exception as exc:
            logger.exception("model call failed", extra={"batch_size": len(batch)})
            for item in batch:
                item.pixels = None
                _resolve(item.job.future, exc)
            return
        self._ran.put(
            _Ran(
                batch,
                loc,
                cls,
                start,
                time.monotonic() - start,
                self.detector,
                self.model_version,
            )
        )

    def _post_loop(self) -> None:
        while True:
            ran = self._ran.get()
            try:
                if ran is None:
                    return
                self._settle(ran)
            finally:
                self._ran.task_done()

    def _settle(self, ran: _Ran) -> None:
        """Post-process a batch the model ran and resolve the jobs it completes."""
        batch, loc, cls, start = ran.items, ran.loc, ran.cls, ran.start
        began = time.monotonic()
        try:
            results = [
                ran.detector.postprocess(loc[i], cls[i], conf=item.job.conf, iou=item.job.iou)
                for i, item in enumerate(batch)
            ]
            # compute: the model call plus its post-processing (now on two threads)
            compute = ran.compute + (time.monotonic() - began)
        except Exception as exc:
            logger.exception("post-processing failed", extra={"batch_size": len(batch)})
            for item in batch:
                _resolve(item.job.future, exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), compute)
        seen: set[int] = set()
        for item, detections in zip(batch, results, strict=True):
            job = item.job
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
            self._finish(job, len(batch), ran.version)

    def _track_partial(self, job: Job) -> None:
        """Remember a job with windows run and windows to go (a swap restarts it) until
        its future resolves, however it resolves (an expired job never finishes)."""
        key = id(job)
        if key not in self._partial:
            self._partial[key] = job
            job.future.add_done_callback(lambda _f: self._partial.pop(key, None))

    def _finish(self, job: Job, batch_size: int, version: str) -> None:
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
                model=version,
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
        # the batches already run settle first (on their own model), so the jobs with
        # windows run on the old model are all in _partial
        self._ran.join()
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
        self._post.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            pending, self._swap = self._swap, None
        if pending is not None:
            pending.done.set_result(pending.detector)
