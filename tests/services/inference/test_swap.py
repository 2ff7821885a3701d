"""Model swaps in the dynamic batcher (rolling updates), with tiny deterministic runtimes
(no TensorFlow): every result names the model that ran it, a swap happens between two
batches, a tiled frame never mixes two models, nothing is lost."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from facemask.core.tiling import TileSpec
from facemask.model.detector import Detector
from services.inference.batcher import DynamicBatcher, Job, JobResult
from tests.services.inference.test_batcher import BrightnessRuntime, _jpeg


class ScaledRuntime(BrightnessRuntime):
    """Another "model": anchor 0 scores half the input's mean, so a result shows which of
    the two ran it."""

    name = "scaled"

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loc, cls = super().infer(batch)
        cls[:, 0, 1] *= 0.5
        return loc, cls


class GatedRuntime(BrightnessRuntime):
    """Its first call blocks until ``release`` is set (``entered`` says it is inside)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.entered = threading.Event()
        self.release = threading.Event()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10), "the test never released the model"
        return super().infer(batch)


def _detector(runtime: BrightnessRuntime) -> Detector:
    return Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="x")


def _batcher(runtime: BrightnessRuntime, **kw: object) -> DynamicBatcher:
    return DynamicBatcher(_detector(runtime), decode_reduce="full", model_version="v1", **kw)  # type: ignore[arg-type]


def test_swap_under_load_every_result_names_the_model_that_ran_it() -> None:
    old, new = GatedRuntime(delay=0.002), ScaledRuntime(delay=0.002)
    batcher = _batcher(old, max_batch_size=4, max_queue_delay=0.001)
    resolved: list[tuple[int, JobResult]] = []  # in the order the model thread resolved them
    futures: list[Future[JobResult]] = []

    def submit(level: int) -> None:
        future = batcher.submit(Job(data=_jpeg(level), conf=0.01, iou=0.5))
        future.add_done_callback(lambda f: resolved.append((level, f.result())))
        futures.append(future)

    try:
        levels = [10 + (i * 7) % 240 for i in range(120)]
        for level in levels[:60]:
            submit(level)
        assert old.entered.wait(10)  # a batch is in the old model: the swap comes after it
        swapped = batcher.swap(_detector(new), "v2")
        for level in levels[60:80]:
            submit(level)
        old.release.set()
        for level in levels[80:]:
            submit(level)
        assert swapped.result(10).runtime is old
        old_calls = len(old.batches)
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert len(resolved) == len(levels)  # none lost, none twice
    assert sorted(level for level, _ in resolved) == sorted(levels)
    models = [result.model for _, result in resolved]
    assert set(models) == {"v1", "v2"}
    switch = models.index("v2")
    assert models == ["v1"] * switch + ["v2"] * (len(models) - switch)  # one switch, for good
    for level, result in resolved:
        scale = 1.0 if result.model == "v1" else 0.5
        assert result.detections.scores[0] == pytest.approx(scale * level / 255, abs=1e-4)
    assert len(old.batches) == old_calls  # the old model ran nothing after the swap
    assert sum(old.batches) == switch and sum(new.batches) == len(levels) - switch
    assert batcher.model_version == "v2"


def test_a_tiled_frame_straddling_the_swap_runs_whole_on_the_new_model() -> None:
    old, new = GatedRuntime(), ScaledRuntime()
    batcher = _batcher(old, max_batch_size=2, max_queue_delay=0.001)
    try:
        future = batcher.submit(
            Job(data=_jpeg(100, (400, 300)), conf=0.01, iou=0.5, tiles=TileSpec(2, 2))
        )
        assert old.entered.wait(10)  # its first two windows are in the old model
        swapped = batcher.swap(_detector(new), "v2")
        old.release.set()
        result = future.result(10)
        assert swapped.result(10).runtime is old
    finally:
        batcher.close()
    assert sum(old.batches) == 2  # two windows ran on the old model ...
    assert sum(new.batches) == 5  # ... and ran again, with the other three, on the new one
    assert result.model == "v2" and result.model_runs == 5
    assert result.detections.scores == pytest.approx(0.5 * 100 / 255, abs=1e-4)


def test_a_superseded_swap_hands_back_its_own_detector() -> None:
    old, first, second = GatedRuntime(), ScaledRuntime(), ScaledRuntime()
    batcher = _batcher(old, max_batch_size=1, max_queue_delay=0.001)
    try:
        running = batcher.submit(Job(data=_jpeg(50), conf=0.01, iou=0.5))
        assert old.entered.wait(10)
        superseded = batcher.swap(_detector(first), "v2")
        final = batcher.swap(_detector(second), "v3")
        assert superseded.result(1).runtime is first  # never ran: the caller closes it
        old.release.set()
        assert running.result(10).model == "v1"  # the batch in the model finished on v1
        assert final.result(10).runtime is old
        after = batcher.submit(Job(data=_jpeg(50), conf=0.01, iou=0.5)).result(10)
    finally:
        batcher.close()
    assert after.model == "v3" and first.batches == [] and second.batches == [1]
