"""Model version export: model.pb with the upstream tensor names, float32 and int8 TFLite,
each loaded by the existing runtimes, at the upstream and at another input size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facemask.core.anchors import generate_anchors
from facemask.core.preprocess import decode_image, preprocess_batch
from facemask.model import store as modelstore
from facemask.model.detector import Detector, create_detector
from facemask.model.runtime import create_runtime
from facemask.model.runtime.base import Runtime
from tests.fixtures.paths import missing, require, require_module

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def upstream_model() -> Any:
    require_module("tensorflow")
    require_module("ai_edge_litert")
    from facemask.model.ssd import build_ssd

    try:
        return build_ssd()
    except modelstore.ModelStoreError as exc:
        missing(str(exc))


@pytest.fixture(scope="module")
def exported(
    upstream_model: Any, tmp_path_factory: pytest.TempPathFactory, samples_dir: Path
) -> dict[str, Path]:
    """The upstream weights exported at 260, int8 calibrated on the three samples."""
    from facemask.model.export import export_version

    out = tmp_path_factory.mktemp("version")
    calibration = sorted(samples_dir.iterdir())
    paths = export_version(upstream_model, out, calibration=calibration, input_size=260)
    assert paths == {
        "tf": out / "model.pb",
        "float32": out / "model.float32.tflite",
        "int8": out / "model.int8.tflite",
    }
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    return paths


@pytest.fixture(scope="module")
def original() -> Iterator[Runtime]:
    """The upstream frozen graph as it is (batch norms not folded)."""
    from facemask.model.runtime.tensorflow import TensorFlowRuntime

    runtime = TensorFlowRuntime(fold_batch_norm=False)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def images(samples_dir: Path, shared_dir: Path) -> list[np.ndarray]:
    dev = require(shared_dir / "data" / "facemask-dev" / "images", "dev set")
    files = sorted(samples_dir.iterdir()) + sorted(dev.glob("*.jpg"))[::25]
    return [decode_image(path.read_bytes()).rgb for path in files]


def _best_iou(box: np.ndarray, others: np.ndarray) -> float:
    """The highest IoU of ``box`` with any of ``others`` (all ``x1, y1, x2, y2``)."""
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(others[:, 2:] - others[:, :2], axis=1)
    return float((inter / (area - inter)).max())


def test_model_pb_equals_the_upstream_graph(
    exported: dict[str, Path], original: Runtime, images: list[np.ndarray]
) -> None:
    from facemask.model.native import import_tensorflow
    from facemask.model.runtime.tensorflow import TensorFlowRuntime
    from facemask.model.ssd import read_frozen_weights

    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(exported["tf"].read_bytes())
    ops = {node.name: node.op for node in graph_def.node}
    assert ops["data_1"] == "Placeholder"
    assert ops["loc_branch_concat_1/concat"] == ops["cls_branch_concat_1/concat"] == "ConcatV2"
    assert "FusedBatchNorm" not in ops.values()  # folded
    runtime = TensorFlowRuntime(model_path=exported["tf"])
    try:
        assert runtime.input_size == (260, 260)
        batch = preprocess_batch(images)
        loc, cls = runtime.infer(batch)
        want_loc, want_cls = original.infer(batch)
        np.testing.assert_allclose(loc, want_loc, rtol=0, atol=1e-4)
        np.testing.assert_allclose(cls, want_cls, rtol=0, atol=1e-4)
    finally:
        runtime.close()
    # read back, the weights are the upstream ones exactly
    upstream, again = read_frozen_weights(), read_frozen_weights(exported["tf"].parent)
    assert upstream.keys() == again.keys()
    for name, (kernel, bias) in upstream.items():
        np.testing.assert_array_equal(again[name][0], kernel)
        np.testing.assert_array_equal(again[name][1], bias)


def test_tflite_float32_matches_and_int8_finds_the_same_faces(
    exported: dict[str, Path], original: Runtime, images: list[np.ndarray]
) -> None:
    batch = preprocess_batch(images)
    want_loc, want_cls = original.infer(batch)
    f32 = create_runtime("tflite", model_path=exported["float32"])
    int8 = create_runtime("tflite", model_path=exported["int8"])
    try:
        loc, cls = f32.infer(batch)
        np.testing.assert_allclose(loc, want_loc, rtol=0, atol=1e-4)
        np.testing.assert_allclose(cls, want_cls, rtol=0, atol=1e-4)
        float_det, int8_det = Detector(f32), Detector(int8)
        for rgb in images[:3]:  # the sample images
            (want,) = float_det.detect([rgb])
            (got,) = int8_det.detect([rgb])
            assert len(want) > 0
            assert sorted(got.labels) == sorted(want.labels)
            assert min(_best_iou(box, want.xyxy) for box in got.xyxy) > 0.8
            assert abs(np.sort(got.scores) - np.sort(want.scores)).max() < 0.1
    finally:
        f32.close()
        int8.close()


def test_export_at_another_size_runs_on_every_runtime(
    upstream_model: Any, tmp_path: Path, images: list[np.ndarray]
) -> None:
    from facemask.model.export import export_version
    from facemask.model.ssd import build_ssd

    model = build_ssd(320)
    with pytest.raises(ValueError, match="calibration"):
        export_version(model, tmp_path, calibration=[], input_size=320)
    stale = tmp_path / "model.int8.tflite"
    stale.write_bytes(b"an earlier export's int8")
    paths = export_version(model, tmp_path, calibration=None, input_size=320)
    assert sorted(paths) == ["float32", "tf"]  # no calibration: no int8
    assert not stale.exists()
    batch = preprocess_batch(images, (320, 320))
    want_loc, want_cls = (np.asarray(t) for t in model(batch))
    anchors = len(generate_anchors(input_size=(320, 320)))
    assert want_loc.shape == (len(images), anchors, 4)
    for runtime_name, path in (("tensorflow", paths["tf"]), ("tflite", paths["float32"])):
        detector = create_detector(runtime_name, model_path=path)
        try:
            assert detector.input_size == (320, 320)
            assert len(detector.anchors) == anchors
            loc, cls = detector.infer(batch)
            np.testing.assert_allclose(loc, want_loc, rtol=0, atol=1e-4)
            np.testing.assert_allclose(cls, want_cls, rtol=0, atol=1e-4)
            found = detector.detect(images[:3])  # detect preprocesses at the model's size
            assert all(len(dets) > 0 for dets in found)
            detector.warmup([2])
        finally:
            detector.close()
