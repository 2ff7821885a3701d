"""The re-implemented upstream loop reproduces the reference outputs (it is the speed baseline
and an independent oracle of the project's detector)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from bench import upstream

# Golden outputs were made on another x86-64 machine: oneDNN picks different kernels per CPU,
# so scores and normalised boxes may differ in the last float32 bits (seen: ~2e-7).
SCORE_TOL = 1e-5
BOX_TOL = 1e-5


@pytest.fixture(scope="module")
def upstream_model() -> Iterator[upstream.UpstreamTF]:
    pytest.importorskip("tensorflow")
    from facemask.model import store as modelstore

    try:
        path = modelstore.artifact_path("face_mask_detection.pb")
    except modelstore.ModelStoreError as exc:
        pytest.skip(str(exc))
    model = upstream.UpstreamTF(path, threads=2)
    yield model
    model.close()


def test_anchors_match_the_documented_layout() -> None:
    anchors = upstream.generate_anchors()
    assert anchors.shape == (5972, 4)
    assert anchors.dtype == np.float64
    # first cell of the 33x33 map: centre (0.5/33, 0.5/33); anchors 0.04 and 0.056 at ratio 1
    c = 0.5 / 33
    np.testing.assert_allclose(anchors[0], [c - 0.02, c - 0.02, c + 0.02, c + 0.02])
    np.testing.assert_allclose(anchors[1], [c - 0.028, c - 0.028, c + 0.028, c + 0.028])
    # third anchor: size 0.04 at ratio 0.62 -> w = 0.04*sqrt(.62), h = 0.04/sqrt(.62)
    w, h = 0.04 * np.sqrt(0.62), 0.04 / np.sqrt(0.62)
    np.testing.assert_allclose(anchors[2], [c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    # next cell is the next column (same row)
    np.testing.assert_allclose(anchors[4, [0, 2]], anchors[0, [0, 2]] + 1 / 33)
    np.testing.assert_allclose(anchors[4, [1, 3]], anchors[0, [1, 3]])
    # last anchor: last cell of the 3x3 map, size 0.64 at ratio 0.42
    c = 2.5 / 3
    w, h = 0.64 * np.sqrt(0.42), 0.64 / np.sqrt(0.42)
    np.testing.assert_allclose(anchors[-1], [c - w / 2, c - h / 2, c + w / 2, c + h / 2])


def test_anchors_agree_bit_for_bit_with_the_project_core() -> None:
    core = pytest.importorskip("facemask.core.anchors")
    assert np.array_equal(upstream.generate_anchors(), core.generate_anchors())


def test_decode_of_zero_offsets_is_the_anchor() -> None:
    anchors = upstream.generate_anchors()[None]
    decoded = upstream.decode_boxes(anchors, np.zeros_like(anchors, dtype=np.float32))
    np.testing.assert_allclose(decoded, anchors, atol=1e-15)
    # size offsets are exp(0.2 * t): t = 5 doubles e times the width around the same centre
    raw = np.zeros((1, 1, 4), dtype=np.float32)
    raw[0, 0, 2] = 5.0
    box = upstream.decode_boxes(np.array([[[0.4, 0.4, 0.6, 0.6]]]), raw)[0, 0]
    np.testing.assert_allclose(box, [0.5 - 0.1 * np.e, 0.4, 0.5 + 0.1 * np.e, 0.6])


def test_greedy_nms_keeps_best_and_suppresses_overlaps() -> None:
    boxes = np.array(
        [
            [0.0, 0.0, 1.0, 1.0],  # 0: best
            [0.05, 0.0, 1.0, 1.0],  # 1: IoU ~0.95 with 0 -> suppressed
            [2.0, 2.0, 3.0, 3.0],  # 2: disjoint -> kept
            [2.0, 2.0, 3.0, 3.0],  # 3: below conf -> never a candidate
        ]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.3], dtype=np.float32)
    assert upstream.greedy_nms(boxes, scores, 0.5, 0.4).tolist() == [0, 2]
    # with a looser IoU threshold the overlapping box survives, ordered by score
    assert upstream.greedy_nms(boxes, scores, 0.5, 0.99).tolist() == [0, 1, 2]
    assert upstream.greedy_nms(boxes, scores, 0.95, 0.4).tolist() == []
    assert upstream.greedy_nms(boxes[:0], scores[:0], 0.5, 0.4).tolist() == []


@pytest.mark.model
def test_reproduces_reference_on_sample_images(
    upstream_model: upstream.UpstreamTF, reference_dir: Path, samples_dir: Path
) -> None:
    reference = json.loads((reference_dir / "aizoo_detections.json").read_text())
    conf, iou = reference["meta"]["conf_thresh"], reference["meta"]["iou_thresh"]
    assert len(reference["images"]) == 3
    for key, expected in reference["images"].items():
        path = samples_dir / Path(key).name
        bgr = cv2.imread(str(path))
        assert bgr.shape[:2] == (expected["height"], expected["width"])
        got = upstream_model.detect_file(path, conf, iou)
        want = expected["detections"]
        assert len(got) == len(want), key
        for g, w in zip(got, want, strict=True):
            assert g.class_id == w["class_id"], key
            assert list(g.box_xyxy) == w["box_xyxy"], key
            assert g.anchor_index == w["anchor_index"], key
            assert g.conf == pytest.approx(w["conf"], abs=SCORE_TOL), key
            np.testing.assert_allclose(g.box_norm, w["box_norm_unclipped"], atol=BOX_TOL)


@pytest.mark.model
@pytest.mark.slow
def test_reproduces_reference_on_every_video_frame(
    upstream_model: upstream.UpstreamTF, reference_dir: Path, shared_dir: Path
) -> None:
    reference = json.loads((reference_dir / "aizoo_video_detections.json").read_text())
    video = shared_dir / "data" / "video" / "group4_masks.mp4"
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened()
    got_frames: list[list[list[Any]]] = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            dets = upstream_model.inference(rgb, reference["conf_thresh"], reference["iou_thresh"])
            got_frames.append([d.as_list() for d in dets])
    finally:
        capture.release()
    assert len(got_frames) == len(reference["frames"]) == 414
    assert sum(map(len, got_frames)) > 0
    for index, (got, want) in enumerate(zip(got_frames, reference["frames"], strict=True)):
        assert [[d[0], *d[2:]] for d in got] == [[d[0], *d[2:]] for d in want], index
        for g, w in zip(got, want, strict=True):
            assert g[1] == pytest.approx(w[1], abs=SCORE_TOL), index  # reference: 6 decimals


@pytest.mark.model
def test_project_detector_agrees_with_the_upstream_oracle(
    upstream_model: upstream.UpstreamTF, shared_dir: Path, detector: Any
) -> None:
    """The batched project detector gives upstream's detections at a low threshold."""
    from facemask.core.preprocess import decode_image

    paths = sorted((shared_dir / "data" / "facemask-dev" / "images").glob("*.jpg"))[:6]
    paths += sorted((shared_dir / "data" / "samples").iterdir())
    images = [decode_image(p.read_bytes(), reduce="full") for p in paths]
    ours = detector.detect([im.rgb for im in images], conf=0.05, iou=0.4, batch_size=4)
    compared = 0
    for path, image, dets in zip(paths, images, ours, strict=True):
        theirs = upstream_model.detect_file(path, 0.05, 0.4)
        assert len(dets) == len(theirs), path
        pixels = dets.pixels(image.width, image.height).tolist()
        for i, t in enumerate(theirs):
            assert dets.class_ids[i] == t.class_id, path
            assert dets.scores[i] == pytest.approx(t.conf, abs=1e-5), path
            np.testing.assert_allclose(dets.xyxy[i], t.box_norm, atol=1e-5)
            assert tuple(pixels[i]) == tuple(t.box_xyxy), path
            compared += 1
    assert compared > 20
