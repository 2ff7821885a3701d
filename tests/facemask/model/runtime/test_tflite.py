"""The TFLite runtime matches TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask.core.preprocess import decode_image, preprocess_batch
from facemask.model.detector import Detector
from facemask.model.runtime.base import Runtime

pytestmark = pytest.mark.model


def test_outputs_match_tensorflow(
    tflite_runtime: Runtime, detector: Detector, samples_dir: Path
) -> None:
    images = [decode_image(p.read_bytes()).rgb for p in sorted(samples_dir.iterdir())]
    batch = preprocess_batch(images)
    loc_tf, cls_tf = detector.infer(batch)
    loc, cls = tflite_runtime.infer(batch)
    assert loc.shape == (3, 5972, 4) and cls.shape == (3, 5972, 2)
    np.testing.assert_allclose(loc, loc_tf, atol=1e-3)
    np.testing.assert_allclose(cls, cls_tf, atol=1e-3)
    # same detections through the detector's post-processing
    lite = Detector(tflite_runtime)
    for i in range(3):
        a = lite.postprocess(loc[i], cls[i])
        b = detector.postprocess(loc_tf[i], cls_tf[i])
        assert a.labels == b.labels
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


def test_batch_runs_as_single_invokes(tflite_runtime: Runtime) -> None:
    batch = np.random.default_rng(2).random((3, 260, 260, 3), dtype=np.float32)
    loc, cls = tflite_runtime.infer(batch)
    loc1, cls1 = tflite_runtime.infer(batch[1:2])
    np.testing.assert_array_equal(loc[1], loc1[0])
    np.testing.assert_array_equal(cls[1], cls1[0])
    empty_loc, empty_cls = tflite_runtime.infer(batch[:0])
    assert empty_loc.shape == (0, 5972, 4) and empty_cls.shape == (0, 5972, 2)
    assert tflite_runtime.name == "tflite" and tflite_runtime.input_size == (260, 260)
