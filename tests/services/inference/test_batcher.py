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

from facemask.core.anchors import generate_anchors
from facemask.core.preprocess import ImageDecodeError
from facemask.model.detector import Detector
from services.inference.batcher import (
    DeadlineExpiredError,
    DynamicBatcher,
    Job,
    JobResult,
    QueueFullError,
    ShuttingDownError,
)

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
