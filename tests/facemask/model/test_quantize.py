"""TFLite float32 / int8 builds from the frozen graph, and the tflite runtime on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facemask.core.preprocess import decode_image, preprocess_batch
from facemask.model import quantize
from facemask.model import store as modelstore
from facemask.model.detector import Detector
from facemask.model.runtime import create_runtime


def test_calibration_images_fall_back_and_thin_out(tmp_path: Path, samples_dir: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i:02d}.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    picked = quantize.calibration_images(tmp_path, limit=4)
    assert [p.name for p in picked] == ["f00.jpg", "f03.jpg", "f06.jpg", "f09.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fallback = quantize.calibration_images(empty)
    assert fallback and all(p.suffix in (".jpg", ".png") for p in fallback)


def test_calibration_inputs_are_frames_and_quadrants(samples_dir: Path) -> None:
    path = sorted(samples_dir.iterdir())[0]
    tensors = list(quantize.calibration_inputs([path]))
    assert len(tensors) == 5
    assert all(t.shape == (1, 260, 260, 3) and t.dtype == np.float32 for t in tensors)
    rgb = decode_image(path.read_bytes(), reduce="full").rgb
    np.testing.assert_array_equal(tensors[0][0], preprocess_batch([rgb])[0])


def test_unknown_variant_rejected() -> None:
    with pytest.raises(ValueError):
        quantize.variant_path("int4")


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> Iterator[Path]:
    """float32 and int8 built into a private cache, calibrated on the three samples."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    try:
        source = modelstore.artifact_path(quantize.SOURCE_MODEL)
    except modelstore.ModelStoreError as exc:
        pytest.skip(str(exc))
    cache = tmp_path_factory.mktemp("model-cache")
    (cache / quantize.SOURCE_MODEL).symlink_to(source)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(modelstore.CACHE_ENV, str(cache))
        results = quantize.build(calibration_dir=samples_dir)
    assert [r.variant for r in results] == ["float32", "int8"]
    assert all(r.built and r.path.is_file() and r.path.parent == cache for r in results)
    yield cache


@pytest.mark.model
@pytest.mark.slow
def test_build_is_idempotent_and_rebuilds_on_change(built_cache: Path, samples_dir: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(modelstore.CACHE_ENV, str(built_cache))
        again = quantize.build(calibration_dir=samples_dir)
        assert [r.built for r in again] == [False, False]
        # A different calibration set changes only the int8 key.
        subset = built_cache / "calib"
        subset.mkdir()
        first = sorted(samples_dir.iterdir())[0]
        (subset / first.name).write_bytes(first.read_bytes())
        changed = quantize.build(["float32"], calibration_dir=subset)
        assert [r.built for r in changed] == [False]
        stamp = quantize.variant_path("int8").with_name("face_mask_detection.int8.tflite.json")
        assert "calibration_sha256" in stamp.read_text()


@pytest.mark.model
@pytest.mark.slow
def test_tflite_variants_against_tensorflow(
    built_cache: Path, detector: Detector, samples_dir: Path
) -> None:
    images = [decode_image(p.read_bytes()).rgb for p in sorted(samples_dir.iterdir())]
    batch = preprocess_batch(images)
    loc_tf, cls_tf = detector.infer(batch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(modelstore.CACHE_ENV, str(built_cache))
        f32 = create_runtime("tflite", variant="float32", interpreters=2, threads=1)
        int8 = create_runtime("tflite", variant="int8")
    try:
        loc, cls = f32.infer(batch)
        np.testing.assert_allclose(loc, loc_tf, atol=1e-3)
        np.testing.assert_allclose(cls, cls_tf, atol=1e-3)
        loc8, cls8 = int8.infer(batch)
        assert loc8.dtype == np.float32 and loc8.shape == loc_tf.shape
        # int8 is an approximation: close in score, and it still finds the sample faces.
        assert np.abs(cls8 - cls_tf).mean() < 0.02
        lite = Detector(int8)
        for i in range(len(images)):
            want = detector.postprocess(loc_tf[i], cls_tf[i])
            got = lite.postprocess(loc8[i], cls8[i])
            assert got.labels == want.labels
    finally:
        f32.close()
        int8.close()


@pytest.mark.model
def test_interpreters_run_batch_items_in_parallel_identically(samples_dir: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    try:
        single = create_runtime("tflite", threads=1)
    except modelstore.ModelStoreError as exc:
        pytest.skip(str(exc))
    multi = create_runtime("tflite", interpreters=3, threads=1)
    try:
        assert multi.interpreters == 3 and multi.num_threads == 1  # type: ignore[attr-defined]
        batch = np.random.default_rng(5).random((7, 260, 260, 3), dtype=np.float32)
        loc1, cls1 = single.infer(batch)
        loc3, cls3 = multi.infer(batch)
        np.testing.assert_array_equal(loc1, loc3)
        np.testing.assert_array_equal(cls1, cls3)
        assert multi.infer(batch[:0])[0].shape == (0, 5972, 4)
        loc2, cls2 = multi.infer(batch[:2])  # fewer images than interpreters
        np.testing.assert_array_equal(loc2, loc1[:2])
        np.testing.assert_array_equal(cls2, cls1[:2])
    finally:
        single.close()
        multi.close()
    with pytest.raises(ValueError):
        create_runtime("tflite", interpreters=0)
    with pytest.raises(ValueError):
        create_runtime("tflite", variant="fp16")
