"""``facemask detect`` with the model on every kind of input: an RTSP stream and an HTTP MJPEG
stream served on 127.0.0.1 (:mod:`tests.fixtures.streams`), BMP and WebP files, videos
annotated as MP4, and the progress of a run through ``--server``. The session's detector
runs every test (no TensorFlow load per test)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import pytest

from facemask import cli
from facemask.cli import detect
from facemask.cli.detect import LocalBackend, RemoteBackend, detect_inputs
from facemask.cli.media import InputImage, resolve_inputs
from facemask.cli.progress import Progress
from facemask.core.tiling import parse_tiles
from facemask.core.types import Detections
from tests.facemask.cli.test_detect_inputs import read_video
from tests.fixtures.streams import (  # noqa: F401 (fixtures)
    VIDEO,
    MjpegServer,
    RtspServer,
    mjpeg_server,
    rtsp_server,
)

pytestmark = pytest.mark.model


@pytest.fixture()
def detect_run(detector: Any, capsys: pytest.CaptureFixture[str]) -> Any:
    """``facemask detect ARGS`` on the session's detector: (exit code, stdout lines, stderr)."""

    def run(*argv: str) -> tuple[int, list[dict[str, Any]], str]:
        args = cli.build_parser().parse_args(["detect", *argv])
        backend = LocalBackend(detector, batch_size=args.batch_size, tiles=parse_tiles(args.tiles))
        code = detect.run(args, backend=backend)
        out, err = capsys.readouterr()
        return code, [json.loads(line) for line in out.splitlines()], err

    return run


def _assert_stream_run(
    lines: list[dict[str, Any]], err: str, source: str, frames: int, size: tuple[int, int]
) -> None:
    assert [line["frame"] for line in lines] == list(range(frames))
    assert {line["source"] for line in lines} == {source}
    assert {(line["width"], line["height"]) for line in lines} == {size}
    # four people face the camera in the clip: the model finds faces in (nearly) every frame
    assert sum(1 for line in lines if len(line["detections"]) >= 2) >= frames * 0.8
    assert f"facemask detect: {frames} frames in" in err
    assert "secret" not in err + json.dumps(lines)


def test_rtsp_stream(
    detect_run: Any,
    rtsp_server: RtspServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = rtsp_server.url("admin:secret")
    out = tmp_path / "out"
    code, lines, err = detect_run("--max-frames", "20", "--annotate", str(out), url)
    assert code == 0, err
    _assert_stream_run(lines, err, rtsp_server.url("admin:***"), 20, (960, 506))
    written = out / f"rtsp_127.0.0.1_{rtsp_server.port}_live.mp4"
    assert [p.name for p in out.iterdir()] == [written.name]
    assert read_video(written)[:2] == (20, (506, 960, 3))


def test_http_mjpeg_stream(
    detect_run: Any,
    mjpeg_server: MjpegServer,  # noqa: F811
) -> None:
    url = mjpeg_server.url("admin:secret")
    code, lines, err = detect_run("--max-frames", "30", "--progress", url)  # loops past 25
    assert code == 0, err
    _assert_stream_run(lines, err, mjpeg_server.url("admin:***"), 30, (960, 506))
    assert "30/30" in err.replace("\r", "\n")  # the forced bar, counted to its end
    # frame 25 is frame 0 again: the same picture, the same faces
    assert lines[25]["detections"] == lines[0]["detections"]


def test_bmp_and_webp_give_the_same_faces_as_the_jpeg(
    detect_run: Any, samples_dir: Path, tmp_path: Path
) -> None:
    jpeg = samples_dir / "demo2.jpg"
    pixels = cv2.imread(str(jpeg))  # what the JPEG decodes to, stored losslessly
    paths = [jpeg]
    for name, params in (("demo2.bmp", []), ("demo2.webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
        assert cv2.imwrite(str(tmp_path / name), pixels, params)
        paths.append(tmp_path / name)
    code, lines, err = detect_run(*map(str, paths))
    assert code == 0, err
    assert [line["source"] for line in lines] == list(map(str, paths))
    assert len(lines[0]["detections"]) == 1
    assert lines[1]["detections"] == lines[2]["detections"] == lines[0]["detections"]


@pytest.mark.slow
def test_videos_are_annotated_as_mp4_mirroring_their_paths(
    detect_run: Any, shared_dir: Path, samples_dir: Path, tmp_path: Path
) -> None:
    for camera in ("door", "hall"):  # two inputs named alike
        (tmp_path / "in" / camera).mkdir(parents=True)
        shutil.copy(shared_dir / VIDEO, tmp_path / "in" / camera / "clip.mp4")
        shutil.copy(samples_dir / "demo2.jpg", tmp_path / "in" / camera / "demo2.jpg")
    out = tmp_path / "out"
    code, lines, err = detect_run(
        "--max-frames", "25", "--annotate", str(out), str(tmp_path / "in")
    )
    assert code == 0, err
    assert len(lines) == 2 * 26
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["door/clip.mp4", "door/demo2.jpg", "hall/clip.mp4", "hall/demo2.jpg"]
    for camera in ("door", "hall"):
        count, shape, fps = read_video(out / camera / "clip.mp4")
        assert (count, shape, fps) == (25, (506, 960, 3), 25.0)
        assert cv2.imread(str(out / camera / "demo2.jpg")).shape == (330, 464, 3)


@pytest.mark.slow
def test_with_a_server_the_progress_counts_answers(
    detector: Any, shared_dir: Path, samples_dir: Path
) -> None:
    from services.inference.config import InferenceSettings
    from services.inference.service import InferenceService

    service = InferenceService(
        InferenceSettings(host="127.0.0.1", port=0, metrics_port=0, streams=False),
        detector=detector,
    )
    service.start()
    inputs = resolve_inputs([str(samples_dir), str(shared_dir / VIDEO)])
    progress = Progress(inputs.total(40, None), enabled=True, stream=io.StringIO())
    remote = RemoteBackend(f"127.0.0.1:{service.port}", batch_size=16)

    class Watched:
        """The real remote backend, watched: what the bar said when each request left."""

        def __init__(self) -> None:
            self.sent: list[tuple[int, int]] = []

        def detect(self, images: Sequence[InputImage], **kw: float) -> list[Detections]:
            self.sent.append((progress.done, len(images)))
            return remote.detect(images, **kw)  # type: ignore[arg-type]

        def close(self) -> None:
            remote.close()

    errors: list[tuple[str, str]] = []
    watched = Watched()
    try:
        summary = detect_inputs(
            watched,
            inputs,
            conf=0.5,
            iou=0.4,
            batch_size=16,
            max_frames=40,
            progress=progress,
            on_error=lambda s, m: errors.append((s, m)),
            out=io.StringIO(),
        )
    finally:
        remote.close()
        service.stop()
    assert not errors
    assert (summary.images, summary.frames) == (3, 40)
    # 43 items in requests of 16: the bar stood at the answers received, never at those sent
    assert watched.sent == [(0, 16), (16, 16), (32, 11)]
    assert (progress.done, progress.total) == (43, 43)
