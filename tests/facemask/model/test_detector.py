"""The Detector with a fake runtime (no TensorFlow): batching, thresholds, warm-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask.core.anchors import generate_anchors
from facemask.model.detector import Detector, model_version_of


class _FakeRuntime:
    """Outputs one detection per image, on anchor ``5000 + brightness``; records calls."""

    name = "fake"
    input_size = (260, 260)

    def __init__(self, max_batch_size: int | None = None) -> None:
        self.max_batch_size = max_batch_size
        self.calls: list[int] = []
        self.closed = False

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.max_batch_size is not None:
            assert len(batch) <= self.max_batch_size
        self.calls.append(len(batch))
        loc = np.zeros((len(batch), 5972, 4), np.float32)
        cls = np.zeros((len(batch), 5972, 2), np.float32)
        for i, image in enumerate(batch):
            level = round(float(image[0, 0, 0]) * 255)
            cls[i, 5000 + level] = [0.1, 0.6 + level / 1000]
        return loc, cls

    def close(self) -> None:
        self.closed = True


def _images(n: int) -> list[np.ndarray]:
    return [np.full((100 + i, 120, 3), i, np.uint8) for i in range(n)]


def test_detect_chunks_and_keeps_order() -> None:
    runtime = _FakeRuntime()
    detector = Detector(runtime)
    results = detector.detect(_images(7), batch_size=3)
    assert runtime.calls == [3, 3, 1]
    anchors = generate_anchors()
    for i, dets in enumerate(results):
        assert dets.labels == ["no_mask"]
        assert dets.xyxy[0] == pytest.approx(anchors[5000 + i])


def test_runtime_batch_limit_is_respected() -> None:
    runtime = _FakeRuntime(max_batch_size=2)
    detector = Detector(runtime)
    assert len(detector.detect(_images(5), batch_size=4)) == 5
    assert runtime.calls == [2, 2, 1]


def test_per_call_thresholds_override_defaults() -> None:
    detector = Detector(_FakeRuntime(), conf=0.5)
    images = _images(3)  # scores 0.6, 0.601, 0.602
    assert [len(d) for d in detector.detect(images)] == [1, 1, 1]
    assert [len(d) for d in detector.detect(images, conf=0.6005)] == [0, 1, 1]
    strict = Detector(_FakeRuntime(), conf=0.9)
    assert [len(d) for d in strict.detect(images)] == [0, 0, 0]


def test_postprocess_one_image() -> None:
    detector = Detector(_FakeRuntime())
    loc, cls = detector.infer(np.zeros((2, 260, 260, 3), np.float32))
    det = detector.postprocess(loc[0], cls[0])
    assert len(det) == 1
    assert det.scores[0] == pytest.approx(0.6)
    assert len(detector.postprocess(loc[0], cls[0], conf=0.7)) == 0


def test_warmup_runs_each_batch_size() -> None:
    runtime = _FakeRuntime()
    Detector(runtime).warmup((1, 8))
    assert runtime.calls == [1, 8]


def test_empty_input_and_bad_batch_size() -> None:
    detector = Detector(_FakeRuntime())
    assert detector.detect([]) == []
    with pytest.raises(ValueError):
        detector.detect(_images(1), batch_size=0)


def test_metadata_and_close(tmp_path: Path) -> None:
    runtime = _FakeRuntime()
    detector = Detector(runtime, conf=0.3, iou=0.6, model_version="abc")
    assert (detector.conf, detector.iou, detector.model_version) == (0.3, 0.6, "abc")
    assert detector.anchors.shape == (5972, 4)
    default = Detector(runtime)
    assert default.model_version == "6a2072385eb0"  # the pinned .pb's sha256 prefix
    detector.close()
    assert runtime.closed
    model = tmp_path / "m.pb"
    model.write_bytes(b"abc")
    # sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    assert model_version_of(model) == "ba7816bf8f01"


# --- the real model ---------------------------------------------------------------------


def _reference_images(samples_dir: Path) -> dict[str, np.ndarray]:
    from facemask.core.preprocess import decode_image

    return {
        f"img/{p.name}": decode_image(p.read_bytes(), reduce="full").rgb
        for p in sorted(samples_dir.iterdir())
    }


def _video_frames(shared_dir: Path, count: int) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(shared_dir / "data" / "video" / "group4_masks.mp4"))
    frames = []
    while len(frames) < count:
        ok, bgr = capture.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.mark.model
def test_reference_detections_unclipped(
    detector: Detector, samples_dir: Path, reference_dir: Path
) -> None:
    import json

    reference = json.loads((reference_dir / "aizoo_detections.json").read_text())["images"]
    images = _reference_images(samples_dir)
    assert set(images) == set(reference)
    for key, rgb in images.items():
        found = detector.detect([rgb], conf=0.5, iou=0.4)[0]
        expected = reference[key]["detections"]
        assert len(found) == len(expected), key
        height, width = rgb.shape[:2]
        pixels = found.pixels(width, height).tolist()
        for i, (box, ref) in enumerate(zip(pixels, expected, strict=True)):
            assert found.class_ids[i] == ref["class_id"]
            assert found.scores[i] == pytest.approx(ref["conf"], abs=1e-3)
            assert found.xyxy[i] == pytest.approx(ref["box_norm_unclipped"], abs=1e-4)
            assert max(abs(a - b) for a, b in zip(box, ref["box_xyxy"], strict=True)) <= 1


@pytest.mark.model
def test_batched_equals_batch_of_one(
    detector: Detector, samples_dir: Path, shared_dir: Path
) -> None:
    images = list(_reference_images(samples_dir).values()) + _video_frames(shared_dir, 10)
    single = detector.detect(images, batch_size=1)
    assert sum(len(d) for d in single) > 10  # a meaningful comparison
    for batch_size in (4, 13):
        assert detector.detect(images, batch_size=batch_size) == single
    # raw outputs too, bit for bit
    from facemask.core.preprocess import preprocess_batch

    batch = preprocess_batch(images[:6])
    loc, cls = detector.infer(batch)
    for i in range(6):
        loc1, cls1 = detector.infer(batch[i : i + 1])
        np.testing.assert_array_equal(loc[i], loc1[0])
        np.testing.assert_array_equal(cls[i], cls1[0])


@pytest.mark.model
def test_real_detector_metadata(detector: Detector) -> None:
    assert detector.runtime.name == "tensorflow"
    assert detector.model_version == "6a2072385eb0"
    detector.warmup((1, 2))
