"""The TensorFlow runtime on the real frozen graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask.model.detector import Detector

pytestmark = pytest.mark.model


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 260, 260, 3), dtype=np.float32)


def test_output_shapes(detector: Detector) -> None:
    runtime = detector.runtime
    assert runtime.name == "tensorflow"
    assert runtime.input_size == (260, 260)
    assert runtime.max_batch_size is None
    loc, cls = runtime.infer(_batch(3))
    assert loc.shape == (3, 5972, 4) and loc.dtype == np.float32
    assert cls.shape == (3, 5972, 2) and cls.dtype == np.float32
    assert cls.min() >= 0.0 and cls.max() <= 1.0  # sigmoid scores


def test_rejects_wrong_input(detector: Detector) -> None:
    with pytest.raises(ValueError):
        detector.runtime.infer(np.zeros((1, 300, 300, 3), np.float32))


def test_batch_norm_folding_keeps_outputs(detector: Detector) -> None:
    import tensorflow as tf

    from facemask.model import store as modelstore
    from facemask.model.runtime.tensorflow import TensorFlowRuntime, fold_batch_norms

    path = modelstore.artifact_path("face_mask_detection.pb")
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    folded, count = fold_batch_norms(tf, graph_def)
    assert count == 18
    assert not [n for n in folded.node if n.op == "FusedBatchNorm"]
    unfolded = TensorFlowRuntime(model_path=path, fold_batch_norm=False)
    batch = _batch(2, seed=1)
    for a, b in zip(detector.runtime.infer(batch), unfolded.infer(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    unfolded.close()
    with pytest.raises(RuntimeError, match="closed"):
        unfolded.infer(batch)


def test_one_precision_per_process(detector: Detector) -> None:
    """bf16 is a process-wide TensorFlow option: this process already runs float32."""
    from facemask.model.runtime.tensorflow import TensorFlowRuntime

    assert detector.precision == "float32"
    with pytest.raises(RuntimeError, match="needs a process of its own"):
        TensorFlowRuntime(precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        TensorFlowRuntime(precision="half")
    # auto adopts the precision the process already runs (a model swap, a second runtime)
    second = TensorFlowRuntime(precision="auto")
    assert second.precision == "float32"
    second.close()


def test_input_size_comes_from_the_graph_placeholder(detector: Detector) -> None:
    from facemask.model.native import import_tensorflow
    from facemask.model.runtime.tensorflow import graph_input_size

    tf = import_tensorflow()

    def graph(shape: list[int] | None, name: str = "data_1") -> object:
        with tf.Graph().as_default() as g:
            tf.compat.v1.placeholder(tf.float32, shape, name=name)
        return g.as_graph_def()

    assert graph_input_size(graph([None, 240, 320, 3])) == (320, 240)
    assert graph_input_size(graph([None, None, None, 3])) == (260, 260)  # open: upstream's
    assert graph_input_size(graph(None)) == (260, 260)
    with pytest.raises(ValueError, match="not a face-mask model"):
        graph_input_size(graph([None, 260, 260, 3], name="input"))
