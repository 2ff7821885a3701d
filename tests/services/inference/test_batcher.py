"""Dynamic batcher logic with a tiny deterministic runtime (no TensorFlow needed).

The runtime puts each image's mean brightness into the score of anchor 0, so every result
can be traced back to the image it came from.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import cv2
import numpy as np
import pytest

import services.inference.batcher as batcher_module
from facemask.core.anchors import generate_anchors
from facemask.core.preprocess import ImageDecodeError
from facemask.core.tiling import TileSpec
from facemask.dev.waiting import wait_until
from facemask.model.detector import Detector
from services.inference.batcher import (
    DeadlineExpiredError,
    DynamicBatcher,
    InvalidJobError,
    Job,
    JobResult,
    QueueFullError,
    RequestTooLargeError,
    ShuttingDownError,
    job_cost,
)
from tests.facemask.core.test_preprocess import patch_jpeg_size, png_header

N_ANCHORS = len(generate_anchors())


class BrightnessRuntime:
    """Fake model: score of anchor 0 = mean of the input; records batch sizes."""

    name = "brightness"
    input_size = (260, 260)
    max_batch_size: int | None = None

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(batch))
        time.sleep(self.delay)
        loc = np.zeros((len(batch), N_ANCHORS, 4), np.float32)
        cls = np.zeros((len(batch), N_ANCHORS, 2), np.float32)
        cls[:, 0, 1] = batch.reshape(len(batch), -1).mean(axis=1)
        return loc, cls

    def close(self) -> None:
        pass


def _jpeg(level: int, size: tuple[int, int] = (80, 60)) -> bytes:
    image = np.full((size[1], size[0], 3), level, np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _batcher(runtime: BrightnessRuntime, **kw: object) -> DynamicBatcher:
    detector = Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="0")  # type: ignore[arg-type]
    return DynamicBatcher(detector, decode_reduce="full", **kw)  # type: ignore[arg-type]


def _job(level: int, **kw: object) -> Job:
    return Job(data=_jpeg(level), conf=0.01, iou=0.5, **kw)  # type: ignore[arg-type]


def test_results_go_back_to_their_own_jobs() -> None:
    runtime = BrightnessRuntime(delay=0.01)
    batcher = _batcher(runtime, max_batch_size=8, max_queue_delay=0.02)
    try:
        levels = list(range(10, 250, 6))
        futures = [batcher.submit(_job(level)) for level in levels]
        for level, future in zip(levels, futures, strict=True):
            result = future.result(10)
            assert len(result.detections) == 1
            assert result.detections.scores[0] == pytest.approx(level / 255, abs=1e-4)
            assert (result.width, result.height) == (80, 60)
            assert 1 <= result.batch_size <= 8
        assert max(runtime.batches) > 1
        assert sum(runtime.batches) == len(levels)
    finally:
        batcher.close()


def test_lone_request_waits_at_most_the_queue_delay() -> None:
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_batch_size=64, max_queue_delay=0.05)
    try:
        start = time.monotonic()
        result = batcher.submit(_job(100)).result(5)
        elapsed = time.monotonic() - start
        assert result.batch_size == 1
        assert 0.05 <= elapsed < 2.0  # waited for the batch to fill, then gave up
        assert runtime.batches == [1]
    finally:
        batcher.close()


def test_batches_never_exceed_max_batch_size() -> None:
    runtime = BrightnessRuntime(delay=0.02)
    batcher = _batcher(runtime, max_batch_size=4, max_queue_delay=0.05)
    try:
        futures = [batcher.submit(_job(50)) for _ in range(30)]
        for f in futures:
            f.result(10)
        assert max(runtime.batches) == 4
        assert sum(runtime.batches) == 30
    finally:
        batcher.close()


def test_queue_full_is_refused_not_queued() -> None:
    runtime = BrightnessRuntime(delay=0.2)
    batcher = _batcher(runtime, max_batch_size=1, max_queue_size=3)
    try:
        accepted = [batcher.submit(_job(10)) for _ in range(3)]
        with pytest.raises(QueueFullError):
            batcher.submit(_job(10))
        for f in accepted:
            f.result(10)
        batcher.submit(_job(10)).result(10)  # room again once answered
        assert batcher.depth == 0
    finally:
        batcher.close()


def test_expired_deadline_is_not_run() -> None:
    runtime = BrightnessRuntime(delay=0.3)
    batcher = _batcher(runtime, max_batch_size=1, max_queue_delay=0.0)
    try:
        blocker = batcher.submit(_job(10))
        time.sleep(0.05)
        late = batcher.submit(_job(20, deadline=time.monotonic() + 0.05))
        with pytest.raises(DeadlineExpiredError):
            late.result(5)
        blocker.result(5)
        assert runtime.batches == [1]  # the expired job never reached the model
    finally:
        batcher.close()


def test_old_frames_are_skipped_with_a_reason() -> None:
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime)
    try:
        result = batcher.submit(
            _job(10, capture_ts=time.time() - 10, max_age=1.0, source="stream")
        ).result(5)
        assert (result.status, result.reason, len(result.detections)) == ("skipped", "too_old", 0)
        assert runtime.batches == []
    finally:
        batcher.close()


def test_decode_errors_resolve_the_job() -> None:
    batcher = _batcher(BrightnessRuntime())
    try:
        with pytest.raises(ImageDecodeError) as info:
            batcher.submit(Job(data=b"nope", conf=0.5, iou=0.4)).result(5)
        assert info.value.reason in {"corrupt_image", "unsupported_format"}
        mismatch = Job(data=_jpeg(10), conf=0.5, iou=0.4, declared_size=(81, 60))
        with pytest.raises(ImageDecodeError) as info:
            batcher.submit(mismatch).result(5)
        assert info.value.reason == "size_mismatch"
        assert batcher.depth == 0
    finally:
        batcher.close()


def test_drain_finishes_admitted_work_and_refuses_new() -> None:
    runtime = BrightnessRuntime(delay=0.05)
    batcher = _batcher(runtime, max_batch_size=2)
    futures: list[Future[JobResult]] = [batcher.submit(_job(i + 1)) for i in range(6)]
    drained = threading.Event()

    def drain() -> None:
        batcher.drain(10)
        drained.set()

    thread = threading.Thread(target=drain)
    thread.start()
    time.sleep(0.01)
    with pytest.raises(ShuttingDownError):
        batcher.submit(_job(1))
    thread.join(10)
    assert drained.is_set()
    assert all(f.done() and f.exception() is None for f in futures)
    batcher.close()


def test_batch_waits_for_images_still_decoding() -> None:
    rng = np.random.default_rng(1)
    noisy = cv2.imencode(".png", rng.integers(0, 255, (900, 900, 3), dtype=np.uint8))[1]
    runtime = BrightnessRuntime()
    batcher = _batcher(
        runtime, max_batch_size=8, max_queue_delay=0.0, max_decode_wait=2.0, decode_workers=1
    )
    try:
        futures = [batcher.submit(Job(data=noisy.tobytes(), conf=0.01, iou=0.5)) for _ in range(8)]
        for f in futures:
            f.result(20)
        # one decode thread finishes images one by one, yet the model does not run them
        # one by one: it waits for the images it knows are being decoded
        assert runtime.batches == [8]
    finally:
        batcher.close()


# -- admission in model inputs and bytes (issue 13) -------------------------------------


class GatedRuntime(BrightnessRuntime):
    """Fake model whose calls wait for ``gate``: work piles up in front of it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        assert self.gate.wait(20), "test did not open the gate"
        return super().infer(batch)


@pytest.mark.parametrize(
    ("tiles", "size", "inputs"),
    [
        (None, (400, 300), 1),
        (TileSpec(2, 2), (400, 300), 5),
        (TileSpec(3, 2), (400, 300), 7),
        (TileSpec(8, 8), (400, 300), 65),
        (TileSpec.parse("auto:4"), (4000, 3000), 65),  # resolved on the header's size
        (TileSpec.parse("auto:40"), (400, 300), 1),  # faces big enough: the full frame only
    ],
)
def test_job_cost_counts_every_model_input(
    tiles: TileSpec | None, size: tuple[int, int], inputs: int
) -> None:
    data = png_header(*size) + bytes(32)  # a header is all the cost needs
    cost = job_cost(Job(data=data, conf=0.5, iou=0.4, tiles=tiles))
    assert cost.inputs == inputs
    assert cost.nbytes == len(data) + 3 * size[0] * size[1]  # PNG: decoded at full size


def test_job_cost_of_reduced_jpeg_and_unreadable_bytes() -> None:
    jpeg = _jpeg_bytes((2080, 1560))
    cost = job_cost(Job(data=jpeg, conf=0.5, iou=0.4))
    assert cost.nbytes == len(jpeg) + 3 * 520 * 390  # at 1/4: both sides stay >= 260
    full = job_cost(Job(data=jpeg, conf=0.5, iou=0.4), decode_reduce="full")
    assert full.nbytes == len(jpeg) + 3 * 2080 * 1560
    assert job_cost(Job(data=b"garbage", conf=0.5, iou=0.4)) == batcher_module.JobCost(1, 7)
    # over the pixel limit: refused on the header by its decode (too_large), costs nothing
    bomb = png_header(100_000, 100_000)
    assert job_cost(Job(data=bomb, conf=0.5, iou=0.4, tiles=TileSpec(2, 2))) == (
        batcher_module.JobCost(1, len(bomb))
    )
    with pytest.raises(InvalidJobError, match="max_tiles"):
        job_cost(Job(data=jpeg, conf=0.5, iou=0.4, tiles=TileSpec(4, 4)), max_tiles=9)


def test_tile_grid_over_max_tiles_is_refused() -> None:
    batcher = _batcher(BrightnessRuntime(), max_tiles=9)
    try:
        job = Job(data=_jpeg(10, (400, 300)), conf=0.5, iou=0.4, tiles=TileSpec(4, 4))
        with pytest.raises(InvalidJobError, match="max_tiles"):
            batcher.submit_all([job])
        job = Job(data=_jpeg(10, (400, 300)), conf=0.5, iou=0.4, tiles=TileSpec(4, 4))
        with pytest.raises(InvalidJobError):
            batcher.submit(job).result(0)
        assert batcher.depth == 0
        ok = Job(data=_jpeg(10, (400, 300)), conf=0.5, iou=0.4, tiles=TileSpec(3, 3))
        assert batcher.submit(ok).result(10).model_runs == 10
    finally:
        batcher.close()


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    return cv2.imencode(".jpg", np.full((size[1], size[0], 3), 90, np.uint8))[1].tobytes()


def test_queue_counts_tiles_as_model_inputs() -> None:
    runtime = GatedRuntime()
    batcher = _batcher(runtime, max_batch_size=1, max_queue_size=11, max_queue_delay=0.0)
    tiled = {"data": _jpeg(60, (400, 300)), "conf": 0.01, "iou": 0.5, "tiles": TileSpec(2, 2)}
    try:
        first = batcher.submit(Job(**tiled))  # type: ignore[arg-type]
        second = batcher.submit(Job(**tiled))  # type: ignore[arg-type]
        assert (batcher.depth, batcher.queued_inputs) == (2, 10)
        assert batcher.queued_bytes >= 2 * 3 * 400 * 300
        # two images queued, far below 11 images, but 10 of 11 model inputs: a third
        # tiled frame does not fit; an untiled one (1 input) still does.
        with pytest.raises(QueueFullError) as info:
            batcher.submit(Job(**tiled))  # type: ignore[arg-type]
        assert not isinstance(info.value, RequestTooLargeError)
        plain = batcher.submit(_job(30))
        runtime.gate.set()
        assert first.result(10).model_runs == 5 and second.result(10).model_runs == 5
        assert plain.result(10).model_runs == 1
        wait_until(lambda: batcher.depth == 0, 5, "budget given back", interval=0.01)
        assert (batcher.queued_inputs, batcher.queued_bytes) == (0, 0)
    finally:
        runtime.gate.set()
        batcher.close()


def test_work_that_can_never_fit_is_refused_before_any_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decodes: list[int] = []
    real = batcher_module.decode_image
    monkeypatch.setattr(
        batcher_module, "decode_image", lambda *a, **k: decodes.append(1) or real(*a, **k)
    )
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_queue_size=64, max_queue_bytes=8 << 20)
    try:
        image = _jpeg(60, (400, 300))
        # 8x8 tiles: 65 inputs > 64, for one image of 400x300
        with pytest.raises(RequestTooLargeError, match="65 model inputs"):
            batcher.submit_all([Job(data=image, conf=0.5, iou=0.4, tiles=TileSpec(8, 8))])
        # one job (a stream frame) is not retried forever: its future fails at once
        future = batcher.submit(Job(data=image, conf=0.5, iou=0.4, tiles=TileSpec(8, 8)))
        with pytest.raises(ImageDecodeError, match="65 model inputs") as info:
            future.result(0)
        assert info.value.reason == "too_large"
        # 13 images x 2x2 tiles: 65 inputs, all or none
        jobs = [Job(data=image, conf=0.5, iou=0.4, tiles=TileSpec(2, 2)) for _ in range(13)]
        with pytest.raises(RequestTooLargeError):
            batcher.submit_all(jobs)
        # a lying 64x48 JPEG whose header says 6000x6000: 108 MB of pixels > 8 MiB
        bomb = patch_jpeg_size(_jpeg_bytes((64, 48)), 6000, 6000)
        with pytest.raises(RequestTooLargeError, match="bytes"):
            batcher.submit_all([Job(data=bomb, conf=0.5, iou=0.4)])
        with pytest.raises(ImageDecodeError, match="too_large"):
            batcher.submit(Job(data=bomb, conf=0.5, iou=0.4)).result(0)
        assert decodes == [] and runtime.batches == []
        assert (batcher.depth, batcher.queued_inputs, batcher.queued_bytes) == (0, 0, 0)
        assert batcher.submit(Job(data=image, conf=0.5, iou=0.4)).result(10).model_runs == 1
    finally:
        batcher.close()


def test_submit_all_admits_all_or_none() -> None:
    runtime = GatedRuntime()
    batcher = _batcher(runtime, max_batch_size=1, max_queue_size=4, max_queue_delay=0.0)
    try:
        held = batcher.submit_all([_job(10), _job(20)])
        with pytest.raises(QueueFullError):
            batcher.submit_all([_job(30), _job(40), _job(50)])  # 2 + 3 > 4
        assert (batcher.depth, batcher.queued_inputs) == (2, 2)
        runtime.gate.set()
        assert [f.result(10).detections.scores[0] for f in held] == [
            pytest.approx(10 / 255, abs=1e-4),
            pytest.approx(20 / 255, abs=1e-4),
        ]
    finally:
        runtime.gate.set()
        batcher.close()


def test_tile_inputs_are_made_per_batch_not_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = batcher_module.preprocess_into
    monkeypatch.setattr(
        batcher_module,
        "preprocess_into",
        lambda rgb, out, **kw: made.append(1) or real(rgb, out, **kw),
    )
    runtime = GatedRuntime()
    batcher = _batcher(runtime, max_batch_size=4, max_queue_size=65, max_queue_delay=0.0)
    try:
        future = batcher.submit(
            Job(data=_jpeg(120, (800, 600)), conf=0.01, iou=0.5, tiles=TileSpec(8, 8))
        )
        wait_until(lambda: runtime.calls == 1, 5, "the first batch", interval=0.01)
        assert len(made) == 4  # 65 inputs queued, one batch of them made
        runtime.gate.set()
        result = future.result(20)
        assert result.model_runs == 65 and len(made) == 65
        assert sum(runtime.batches) == 65 and max(runtime.batches) <= 4
        assert result.detections.scores[0] == pytest.approx(120 / 255, abs=1e-4)
    finally:
        runtime.gate.set()
        batcher.close()


def test_cancelled_job_gives_its_budget_back_and_its_tiles_never_run() -> None:
    runtime = GatedRuntime()
    batcher = _batcher(runtime, max_batch_size=1, max_queue_size=20, max_queue_delay=0.0)
    try:
        blocker = batcher.submit(_job(10))
        wait_until(lambda: runtime.calls == 1, 5, "the blocker in the model", interval=0.01)
        tiled = batcher.submit(
            Job(data=_jpeg(60, (400, 300)), conf=0.01, iou=0.5, tiles=TileSpec(3, 3))
        )
        assert batcher.queued_inputs == 11
        wait_until(lambda: batcher._decoding == 0, 5, "decode done", interval=0.01)
        assert tiled.cancel()
        assert batcher.queued_inputs == 1 and batcher.depth == 1
        runtime.gate.set()
        blocker.result(10)
        wait_until(lambda: batcher.depth == 0, 5, "idle", interval=0.01)
        assert runtime.batches == [1]  # none of the cancelled job's 10 inputs ran
    finally:
        runtime.gate.set()
        batcher.close()


class RecordingRuntime(BrightnessRuntime):
    """Keeps a copy of every batch array it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.inputs.extend(batch.copy())
        return super().infer(batch)


def test_batch_inputs_equal_the_one_step_preprocessing() -> None:
    """Decoded BGR, resized to uint8 in the decode pool and scaled into the batch array by
    the model thread: the same bits as decoding to RGB and preprocessing in one go (reduced
    JPEG decode included)."""
    from facemask.core.preprocess import decode_image, preprocess

    rng = np.random.default_rng(7)
    blobs = []
    for size in ((640, 480), (1280, 720), (300, 280)):
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        image = np.stack([x % 256, y % 256, (x * y) % 256], -1).astype(np.uint8)
        image[::7] = rng.integers(0, 256, image[::7].shape, dtype=np.uint8)
        blobs.append(cv2.imencode(".jpg", image)[1].tobytes())
    runtime = RecordingRuntime()
    detector = Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="0")  # type: ignore[arg-type]
    batcher = DynamicBatcher(detector, decode_reduce="auto", max_batch_size=4)
    try:
        for future in [batcher.submit(Job(data=blob, conf=0.01, iou=0.5)) for blob in blobs]:
            future.result(10)
    finally:
        batcher.close()
    assert len(runtime.inputs) == len(blobs)
    for blob in blobs:
        expected = preprocess(decode_image(blob, reduce="auto").rgb)
        assert any(np.array_equal(row, expected) for row in runtime.inputs)


def test_the_model_runs_the_next_batch_while_the_last_one_is_post_processed() -> None:
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_batch_size=1, max_queue_delay=0.0)
    gate, entered = threading.Event(), threading.Event()
    real = batcher.detector.postprocess

    def slow_postprocess(*args: object, **kw: object) -> object:
        if not entered.is_set():
            entered.set()
            assert gate.wait(10)
        return real(*args, **kw)  # type: ignore[arg-type]

    batcher.detector.postprocess = slow_postprocess  # type: ignore[method-assign,assignment]
    try:
        first = batcher.submit(_job(40))
        assert entered.wait(10)
        second = batcher.submit(_job(80))
        wait_until(lambda: runtime.batches == [1, 1], 5, "the second batch run", interval=0.01)
        assert not first.done() and not second.done()  # both wait for post-processing
        gate.set()
        assert first.result(10).detections.scores[0] == pytest.approx(40 / 255, abs=1e-4)
        assert second.result(10).detections.scores[0] == pytest.approx(80 / 255, abs=1e-4)
    finally:
        gate.set()
        batcher.close()


def test_a_post_processing_error_fails_its_batch_only() -> None:
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_batch_size=1, max_queue_delay=0.0)
    real = batcher.detector.postprocess
    calls = 0

    def flaky_postprocess(*args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("post-processing broke")
        return real(*args, **kw)  # type: ignore[arg-type]

    batcher.detector.postprocess = flaky_postprocess  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(RuntimeError, match="post-processing broke"):
            batcher.submit(_job(40)).result(10)
        assert batcher.submit(_job(80)).result(10).detections.scores[0] == pytest.approx(
            80 / 255, abs=1e-4
        )
        assert batcher.model_alive and batcher.depth == 0
    finally:
        batcher.close()
