"""``facemask detect`` end to end: reference outputs, videos, errors, annotation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facemask import cli
from facemask.cli.detect import detect_images
from facemask.cli.media import InputImage, iter_inputs, resolve_inputs
from facemask.core.types import LABELS, Detections

VIDEO = Path("data") / "video" / "group4_masks.mp4"


@pytest.fixture()
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``facemask ARGS`` in this process (TensorFlow loads once per session).

    Returns (exit code, parsed stdout lines, stderr). The CLI's root-logger set-up is
    skipped so that it does not replace pytest's log handlers.
    """
    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)

    def run(*args: str) -> tuple[int, list[dict[str, Any]], str]:
        code = cli.main(["detect", "--no-progress", *args])
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines()], err

    return run


def _assert_same_detections(
    found: Sequence[dict[str, Any]], expected: Sequence[tuple[int, float, list[int]]], where: str
) -> None:
    """Same set of detections: label equal, score within 1e-3, box within 1 px."""
    unmatched = list(found)
    for class_id, score, box in expected:
        match = next(
            (
                d
                for d in unmatched
                if d["label"] == LABELS[class_id]
                and abs(d["score"] - score) <= 1e-3
                and max(abs(a - b) for a, b in zip(d["box"], box, strict=True)) <= 1
            ),
            None,
        )
        assert match is not None, f"{where}: no match for {LABELS[class_id]} {score} {box}"
        unmatched.remove(match)
    assert not unmatched, f"{where}: unexpected detections {unmatched}"


@pytest.mark.model
def test_samples_reproduce_the_reference(
    run_cli: Any, samples_dir: Path, reference_dir: Path
) -> None:
    reference = json.loads((reference_dir / "aizoo_detections.json").read_text())["images"]
    code, lines, err = run_cli(str(samples_dir))
    assert code == 0, err
    assert [Path(line["source"]).name for line in lines] == ["demo.png", "demo2.jpg", "face.png"]
    for line in lines:
        ref = reference[f"img/{Path(line['source']).name}"]
        assert line["frame"] is None
        assert (line["width"], line["height"]) == (ref["width"], ref["height"])
        assert set(line) == {"source", "frame", "width", "height", "detections"}
        expected = [(d["class_id"], d["conf"], d["box_xyxy"]) for d in ref["detections"]]
        _assert_same_detections(line["detections"], expected, line["source"])
        # and in the reference's order (score, best first)
        assert [d["score"] for d in line["detections"]] == pytest.approx(
            [d["conf"] for d in ref["detections"]], abs=1e-3
        )


@pytest.mark.model
@pytest.mark.slow
def test_video_reproduces_the_reference(
    run_cli: Any, shared_dir: Path, reference_dir: Path
) -> None:
    reference = json.loads((reference_dir / "aizoo_video_detections.json").read_text())
    video = shared_dir / VIDEO
    code, lines, err = run_cli(
        "--iou", "0.5", "--max-frames", "50", "--batch-size", "16", str(video)
    )
    assert code == 0, err
    assert [line["frame"] for line in lines] == list(range(50))
    assert sum(len(line["detections"]) for line in lines) >= 100
    for line in lines:
        assert line["source"] == str(video)
        assert (line["width"], line["height"]) == (reference["width"], reference["height"])
        expected = [(d[0], d[1], d[2:]) for d in reference["frames"][line["frame"]]]
        _assert_same_detections(line["detections"], expected, f"frame {line['frame']}")


@pytest.mark.model
def test_batch_size_and_reduced_decode_do_not_change_results(
    run_cli: Any, samples_dir: Path
) -> None:
    _, default, _ = run_cli(str(samples_dir))
    code, other, _ = run_cli("--batch-size", "2", "--decode", "auto", str(samples_dir))
    assert code == 0
    assert other == default  # the samples are too small for reduced decoding


@pytest.mark.model
def test_corrupt_and_missing_files(run_cli: Any, samples_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    shutil.copy(samples_dir / "demo2.jpg", good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 1000)
    code, lines, err = run_cli(
        str(corrupt), str(good), str(tmp_path / "missing.png"), str(text), str(broken_video)
    )
    assert code == 1
    assert [line["source"] for line in lines] == [str(good)]
    assert len(lines[0]["detections"]) == 1
    errors = [e for e in err.splitlines() if e.startswith("facemask detect: error:")]
    assert len(errors) == 4
    for path, reason in (
        (corrupt, "corrupt_image"),
        (tmp_path / "missing.png", "no such file"),
        (text, "unsupported_format"),
        (broken_video, "video"),
    ):
        assert any(str(path) in e and reason in e for e in errors), (path, errors)


@pytest.mark.model
def test_annotate_draws_the_boxes(run_cli: Any, samples_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "annotated"
    code, lines, err = run_cli("--annotate", str(out_dir), str(samples_dir / "demo2.jpg"))
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["demo2.jpg"]
    drawn = cv2.imread(str(out_dir / "demo2.jpg"))
    assert drawn.shape == (330, 464, 3)
    x1, y1, _, y2 = lines[0]["detections"][0]["box"]  # a mask: green box
    edge = drawn[(y1 + y2) // 2, x1].astype(int)
    assert edge[1] - max(edge[0], edge[2]) > 100, edge  # BGR: green dominates


def test_server_gives_the_same_output_as_local(
    run_cli: Any, samples_dir: Path, detector: Any
) -> None:
    from services.inference.config import InferenceSettings
    from services.inference.service import InferenceService

    local_code, local_lines, _ = run_cli(str(samples_dir))
    settings = InferenceSettings(host="127.0.0.1", port=0, metrics_port=0, streams=False)
    service = InferenceService(settings, detector=detector)
    service.start()
    try:
        code, lines, err = run_cli("--server", f"127.0.0.1:{service.port}", str(samples_dir))
    finally:
        service.stop()
    assert code == local_code == 0, err
    assert lines == local_lines


def test_unreachable_server_is_one_clear_error(run_cli: Any, samples_dir: Path) -> None:
    from facemask.dev.localredis import free_port

    code, lines, err = run_cli("--server", f"127.0.0.1:{free_port()}", str(samples_dir))
    assert code == 1
    assert not lines
    assert "inference service 127.0.0.1:" in err and "UNAVAILABLE" in err
    assert "Traceback" not in err


def test_bad_options(run_cli: Any) -> None:
    with pytest.raises(SystemExit):
        run_cli("--conf", "1.5", "x.jpg")
    with pytest.raises(SystemExit):
        run_cli("--batch-size", "0", "x.jpg")


# --- pieces without the model -------------------------------------------------------------


class _CountingBackend:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, images: Sequence[InputImage], *, conf: float, iou: float) -> list[Detections]:
        self.calls.append(len(images))
        face = Detections(np.array([(0, 0, 0.5, 0.5)]), np.array([conf]), np.array([0]))
        return [face if i.frame else Detections.empty() for i in images]

    def close(self) -> None:
        pass


def test_detect_images_batches_in_order() -> None:
    images = [InputImage("v.mp4", i, np.zeros((4, 4, 3), np.uint8), 4, 4) for i in range(7)]
    backend = _CountingBackend()
    results = list(detect_images(backend, iter(images), conf=0.7, iou=0.4, batch_size=3))
    assert backend.calls == [3, 3, 1]
    assert [image.frame for image, _ in results] == list(range(7))
    assert [len(dets) for _, dets in results] == [0, 1, 1, 1, 1, 1, 1]
    assert results[1][1].scores[0] == 0.7


def test_iter_inputs_expands_directories_sorted(tmp_path: Path) -> None:
    _, png = cv2.imencode(".png", np.zeros((8, 6, 3), np.uint8))
    for name in ("b.png", "a.PNG", "c.png"):
        (tmp_path / name).write_bytes(png.tobytes())
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    empty = tmp_path / "sub"
    inputs = resolve_inputs([str(tmp_path), str(empty)])
    assert inputs.errors == [(str(empty), "no images or videos in this directory")]
    errors: list[tuple[str, str]] = []
    items = list(iter_inputs(inputs, on_error=lambda s, m: errors.append((s, m))))
    assert [Path(i.source).name for i in items] == ["a.PNG", "b.png", "c.png"]
    assert all(i.frame is None and (i.width, i.height) == (6, 8) for i in items)
    assert not errors


@pytest.mark.model
def test_tflite_runtime_reproduces_the_reference(
    run_cli: Any, samples_dir: Path, reference_dir: Path
) -> None:
    pytest.importorskip("ai_edge_litert")
    reference = json.loads((reference_dir / "aizoo_detections.json").read_text())["images"]
    code, lines, err = run_cli("--runtime", "tflite", "--threads", "1", str(samples_dir))
    assert code == 0, err
    assert len(lines) == 3
    for line in lines:
        ref = reference[f"img/{Path(line['source']).name}"]
        expected = [(d["class_id"], d["conf"], d["box_xyxy"]) for d in ref["detections"]]
        _assert_same_detections(line["detections"], expected, line["source"])


def test_missing_model_is_one_clear_error(
    run_cli: Any, samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEMASK_MODEL_DIR", str(tmp_path))  # an empty model cache
    code, lines, err = run_cli(str(samples_dir))
    assert code == 1
    assert not lines
    assert "cannot load the model" in err and "facemask models fetch" in err


# --- memory bounds (issue 13) ----------------------------------------------------------


def test_files_are_judged_on_their_header_before_being_read(tmp_path: Path) -> None:
    from tests.facemask.core.test_preprocess import patch_jpeg_size

    small = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    files = {
        "bomb.jpg": patch_jpeg_size(small, 16000, 16000),  # header: 256 Mpx
        "padded.png": cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        + bytes(20 << 20),  # an 8x8 image in 20 MB
        "good.jpg": small,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    errors: list[tuple[str, str]] = []
    inputs = resolve_inputs([str(tmp_path)])
    items = list(iter_inputs(inputs, on_error=lambda s, m: errors.append((s, m))))
    assert [Path(i.source).name for i in items] == ["good.jpg"]
    assert sorted(Path(s).name for s, _ in errors) == ["bomb.jpg", "padded.png"]
    assert all("too_large" in m for _, m in errors)


def test_chunks_are_cut_by_pixel_bytes() -> None:
    sides = [8, 8, 64, 8, 64, 64, 8]
    images = [InputImage("x", i, np.zeros((s, s, 3), np.uint8), s, s) for i, s in enumerate(sides)]
    backend = _CountingBackend()
    limit = 64 * 64 * 3 + 2 * 8 * 8 * 3  # one big image and two small ones
    results = list(
        detect_images(backend, iter(images), conf=0.5, iou=0.4, batch_size=4, max_chunk_bytes=limit)
    )
    assert [image.frame for image, _ in results] == list(range(7))
    assert backend.calls == [3, 2, 2]  # [8, 8, 64] fills it; then [8, 64]; then [64, 8]
    # one image larger than the limit still runs (alone)
    backend = _CountingBackend()
    list(detect_images(backend, iter(images[2:3]), conf=0.5, iou=0.4, max_chunk_bytes=1))
    assert backend.calls == [1]


def test_prefetch_holds_a_bounded_number_of_bytes() -> None:
    from facemask.cli.detect import _prefetch
    from facemask.dev.waiting import wait_until

    produced = [0]

    def source() -> Iterator[InputImage]:
        for i in range(50):
            produced[0] += 1
            yield InputImage("x", i, np.zeros((32, 32, 3), np.uint8), 32, 32)

    one = 32 * 32 * 3
    reader = _prefetch(source(), depth=100, max_bytes=2 * one)
    try:
        for consumed in range(1, 6):
            assert next(reader).frame == consumed - 1
            # two buffered, one more in the reader's hand waiting for room: never all 50
            wait_until(lambda c=consumed: produced[0] == c + 3, 5, "the reader", interval=0.01)
    finally:
        reader.close()
    assert produced[0] < 50


def test_remote_backend_halves_a_request_the_service_cannot_hold() -> None:
    import grpc

    from facemask.cli.detect import BackendError, RemoteBackend

    class Exhausted(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "queue holds at most 2 model inputs"

    class FakeRemote:
        target = "fake:1"

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def detect_encoded(self, blobs: Sequence[bytes], **_kw: Any) -> list[Any]:
            self.sizes.append(len(blobs))
            if len(blobs) > 2:
                raise Exhausted()
            return [type("R", (), {"detections": Detections.empty()})() for _ in blobs]

    backend = RemoteBackend.__new__(RemoteBackend)
    remote = FakeRemote()
    backend.remote, backend.batch_size, backend.tiles = remote, 8, "4x4"  # type: ignore[assignment]
    images = [InputImage("x", i, np.zeros((8, 8, 3), np.uint8), 8, 8) for i in range(7)]
    assert len(backend.detect(images, conf=0.5, iou=0.4)) == 7
    assert remote.sizes == [7, 3, 1, 2, 4, 2, 2]
    backend.batch_size = 1  # a single image the service refuses: one clear error
    remote.detect_encoded = lambda blobs, **kw: (_ for _ in ()).throw(Exhausted())  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="RESOURCE_EXHAUSTED"):
        backend.detect(images[:1], conf=0.5, iou=0.4)
