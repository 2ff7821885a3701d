"""The batcher feeds the model at the input size of its model file (a model version
exported at another size than the upstream 260x260), untiled and tiled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facemask.core.anchors import num_anchors
from facemask.core.tiling import TileSpec
from facemask.model.detector import Detector
from services.inference.batcher import DynamicBatcher, Job


class SizedRuntime:
    """Fake model of a given input size: anchor 0 scores the input's mean brightness;
    records the shape of every batch it ran."""

    name = "sized"
    max_batch_size: int | None = None

    def __init__(self, input_size: tuple[int, int]) -> None:
        self.input_size = input_size
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.input_size
        if batch.shape[1:] != (height, width, 3):
            raise ValueError(f"expected [B, {height}, {width}, 3], got {batch.shape}")
        self.shapes.append(batch.shape)
        anchors = num_anchors(self.input_size)
        loc = np.zeros((len(batch), anchors, 4), np.float32)
        cls = np.zeros((len(batch), anchors, 2), np.float32)
        cls[:, 0, 1] = batch.reshape(len(batch), -1).mean(axis=1)
        return loc, cls

    def close(self) -> None:
        pass


@pytest.mark.parametrize("tiles", [None, TileSpec(2, 2)])
def test_batches_have_the_model_input_size(tiles: TileSpec | None) -> None:
    runtime = SizedRuntime((320, 288))
    detector = Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="0")  # type: ignore[arg-type]
    assert len(detector.anchors) == num_anchors((320, 288))
    batcher = DynamicBatcher(detector, decode_reduce="full", max_batch_size=8)
    image = np.full((300, 400, 3), 128, np.uint8)
    try:
        job = Job(data=cv2.imencode(".png", image)[1].tobytes(), conf=0.01, iou=0.5, tiles=tiles)
        result = batcher.submit(job).result(10)
    finally:
        batcher.close()
    assert runtime.shapes and all(shape[1:] == (288, 320, 3) for shape in runtime.shapes)
    assert sum(shape[0] for shape in runtime.shapes) == (1 if tiles is None else 5)
    assert len(result.detections) >= 1
    assert result.detections.scores.max() == pytest.approx(128 / 255, abs=1e-3)
