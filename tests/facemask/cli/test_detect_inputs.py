"""``facemask detect`` without the model: what it reads (files, directories, videos, devices,
URLs), the early errors, the annotated outputs' names and MP4 files, the progress of
finished items and the summary line. Detection runs through a small backend that answers
fixed faces (real OpenCV everywhere)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from facemask.cli.detect import Summary, detect_inputs
from facemask.cli.media import (
    InputImage,
    Inputs,
    iter_inputs,
    plan_outputs,
    resolve_inputs,
)
from facemask.cli.progress import Progress, progress_enabled
from facemask.core.capture import CaptureSpec, SourceTextError, parse_source_text
from facemask.core.types import Detections
from facemask.dev.localredis import free_port
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.streams import MjpegServer


def write_video(
    path: Path, frames: int, size: tuple[int, int] = (64, 48), fps: float = 10.0
) -> Path:
    """An MP4 (mp4v) of ``frames`` frames whose grey level is 10 * the frame index."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


def write_image(path: Path, size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix if path.suffix.lower() in (".png", ".jpg", ".bmp", ".webp") else ".png"
    ok, data = cv2.imencode(ext, np.full((size[1], size[0], 3), 128, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def read_video(path: Path) -> tuple[int, tuple[int, ...] | None, float]:
    """(frames OpenCV decodes, frame shape, fps) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return count, shape, fps


class FaceBackend:
    """Answers one face per image (a mask for stills, no_mask for frames) and records, at
    each call, how many items the progress had counted as finished."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.calls: list[tuple[int, int]] = []  # (progress.done when called, images)

    def detect(self, images: Sequence[InputImage], *, conf: float, iou: float) -> list[Detections]:
        self.calls.append((self.progress.done if self.progress else -1, len(images)))
        return [
            Detections(
                np.array([(0.25, 0.25, 0.75, 0.75)]),
                np.array([0.9]),
                np.array([0 if image.frame is None else 1]),
            )
            for image in images
        ]

    def close(self) -> None:
        pass


def run_detect(
    inputs: Inputs,
    *,
    batch_size: int = 4,
    annotate: Path | None = None,
    progress: Progress | None = None,
    **options: object,
) -> tuple[Summary, list[dict[str, object]], list[tuple[str, str]], FaceBackend]:
    progress = progress or Progress(inputs.total(None, None), enabled=False)
    backend = FaceBackend(progress)
    errors: list[tuple[str, str]] = []
    out = io.StringIO()
    if annotate is not None:
        plan_outputs(inputs)
    summary = detect_inputs(
        backend,
        inputs,
        conf=0.5,
        iou=0.4,
        batch_size=batch_size,
        annotate=annotate,
        progress=progress,
        on_error=lambda s, m: errors.append((s, m)),
        out=out,
        **options,  # type: ignore[arg-type]
    )
    return summary, [json.loads(line) for line in out.getvalue().splitlines()], errors, backend


# --- source texts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("0", CaptureSpec("device", "0", 0)),
        (" 2 ", CaptureSpec("device", "2", 2)),
        ("/dev/video0", CaptureSpec("device", "/dev/video0")),
        (
            "rtsp://user:pw@cam.local:554/live/ch1",
            CaptureSpec("url", "rtsp://user:pw@cam.local:554/live/ch1"),
        ),
        ("HTTP://cam/mjpg", CaptureSpec("url", "HTTP://cam/mjpg")),
        ("file:///data/clip.mp4", CaptureSpec("path", "/data/clip.mp4")),
        ("clips/a b.mp4", CaptureSpec("path", "clips/a b.mp4")),
        ("rtsp:/host/x", CaptureSpec("path", "rtsp:/host/x")),  # not a URL: a (missing) path
    ],
)
def test_source_texts(text: str, spec: CaptureSpec) -> None:
    assert parse_source_text(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "device index -1 must be >= 0"),
        ("ftp://user:pw@host/x", "unsupported URL scheme 'ftp'"),
        ("rtsp:///live", "URL without a host"),
        ("file://", "file URL without a path"),
        ("  ", "empty source"),
    ],
)
def test_bad_source_texts(text: str, message: str) -> None:
    with pytest.raises(SourceTextError, match=message) as info:
        parse_source_text(text)
    assert "pw" not in str(info.value)


# --- directories --------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for name in ("b.jpg", "a.png", "Z.JPG", "sub/c.bmp", "sub/deeper/d.webp", ".hidden/e.jpg"):
        write_image(root / name)
    write_image(root / ".f.jpg")
    (root / "notes.txt").write_text("not an image")
    write_video(root / "sub" / "clip.mp4", 3)
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize(
    ("glob", "recursive", "expected"),
    [
        (None, True, ["a.png", "b.jpg", "sub/c.bmp", "sub/clip.mp4", "sub/deeper/d.webp", "Z.JPG"]),
        (None, False, ["a.png", "b.jpg", "Z.JPG"]),
        ("*.jpg", True, ["b.jpg", "Z.JPG"]),  # case-insensitive, at any depth, no hidden file
        ("sub/*", True, ["sub/c.bmp", "sub/clip.mp4", "sub/deeper/d.webp"]),
        ("sub/*.bmp", True, ["sub/c.bmp"]),
        ("*.webp", False, []),
    ],
)
def test_directories_are_searched_recursively_in_a_fixed_order(
    tree: Path, glob: str | None, recursive: bool, expected: list[str]
) -> None:
    inputs = resolve_inputs([str(tree)], glob=glob, recursive=recursive)
    assert [PurePosixPath(Path(i.name).relative_to(tree)).as_posix() for i in inputs.items] == (
        expected
    )
    assert all(i.kind == ("video" if i.name.endswith(".mp4") else "image") for i in inputs.items)
    if expected:
        assert inputs.errors == []
    else:
        assert inputs.errors == [(str(tree), "no files matching '*.webp' in this directory")]


def test_the_annotate_directory_is_not_read_back(tree: Path) -> None:
    write_image(tree / "out" / "a.png")  # an earlier run's output
    names = [Path(i.name).name for i in resolve_inputs([str(tree)], skip=tree / "out").items]
    assert names == ["a.png", "b.jpg", "c.bmp", "clip.mp4", "d.webp", "Z.JPG"]
    names = [Path(i.name).name for i in resolve_inputs([str(tree)]).items]
    assert names.count("a.png") == 2


def test_a_glob_takes_files_of_any_extension_and_probes_them(tree: Path, tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", 4).rename(tree / "clip.data")  # a video all the same
    (tree / "photo.data").write_bytes((tree / "a.png").read_bytes())  # an image
    inputs = resolve_inputs([str(tree)], glob="*.[dt][ax][tx]*")
    assert [(Path(i.name).name, i.kind, i.frames) for i in inputs.items] == [
        ("clip.data", "video", 4),
        ("photo.data", "image", None),
    ]
    assert inputs.errors == [(str(tree / "notes.txt"), "not an image or a video OpenCV reads")]


def test_missing_and_empty_inputs_are_named_as_given(tree: Path) -> None:
    assert cv2.imwrite(str(tree / "scan.tif"), np.zeros((8, 8, 3), np.uint8))
    inputs = resolve_inputs(
        [
            str(tree / "scan.tif"),  # FFmpeg would read it as a video, past the size check
            str(tree / "missing"),
            str(tree / "empty"),
            "rtsp:/mangled/by/pathlib",
            "ftp://user:secret@host/x",
            str(tree / "a.png"),
        ]
    )
    assert [i.name for i in inputs.items] == [str(tree / "a.png")]
    assert inputs.errors == [
        (str(tree / "scan.tif"), "unsupported image format (JPEG, PNG, BMP and WebP are read)"),
        (str(tree / "missing"), "no such file or directory"),
        (str(tree / "empty"), "no images or videos in this directory"),
        ("rtsp:/mangled/by/pathlib", "no such file or directory"),
        (
            "ftp://user:***@host/x",
            "unsupported URL scheme 'ftp' (supported: file, http, https, rtmp, rtmps, rtsp, "
            "rtsps, srt, tcp, udp)",
        ),
    ]


def test_early_errors_come_before_tensorflow_is_imported(tmp_path: Path) -> None:
    """The inputs are checked first: a typo costs no model load, and URLs keep their //."""
    port = free_port()  # nothing listens: refused at once
    url = f"rtsp://admin:secret@127.0.0.1:{port}/live/ch1"
    code = (
        "import sys, time\n"
        "from facemask import cli\n"
        "started = time.monotonic()\n"
        f"code = cli.main(['detect', {str(tmp_path / 'nope')!r}, {url!r}])\n"
        "heavy = sorted(m for m in ('tensorflow', 'grpc') if m in sys.modules)\n"
        "print(code, heavy, round(time.monotonic() - started, 1))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    code_, heavy, seconds = done.stdout.split(maxsplit=2)
    assert (code_, heavy) == ("1", "[]"), done.stderr
    assert float(seconds.strip("[] \n")) < 5  # instant, next to the 9 s of a TensorFlow import
    assert done.stderr.splitlines() == [
        f"facemask detect: error: {tmp_path / 'nope'}: no such file or directory",
        f"facemask detect: error: rtsp://admin:***@127.0.0.1:{port}/live/ch1: cannot open "
        "this stream",
        "facemask detect: error: nothing to detect",
    ]
    assert "secret" not in done.stderr + done.stdout


# --- annotated outputs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["a/x.jpg", "b/x.jpg"], ["a/x.jpg", "b/x.jpg"]),  # same name: mirrored apart
        (["a/x.jpg"], ["x.jpg"]),
        (["a"], ["x.jpg", "y/x.png"]),  # a directory mirrors from itself
        (["a", "b/x.jpg"], ["a/x.jpg", "a/y/x.png", "b/x.jpg"]),
        (["a/x.jpg", "a/x.jpg"], ["x.jpg", "x~2.jpg"]),  # given twice: never overwritten
        (["v/clip.avi", "v/clip.mp4"], ["clip.avi.mp4", "clip.mp4"]),
        (["a/noext"], ["noext.png"]),
    ],
)
def test_annotated_outputs_mirror_the_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a/x.jpg", "b/x.jpg", "a/y/x.png"):
        write_image(tmp_path / name)
    (tmp_path / "a" / "noext").write_bytes((tmp_path / "a" / "x.jpg").read_bytes())
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "clip.mp4", 2)
    (tmp_path / "v" / "clip.avi").write_bytes((tmp_path / "v" / "clip.mp4").read_bytes())
    inputs = resolve_inputs(args)
    assert not inputs.errors
    plan_outputs(inputs)
    assert [str(i.output) for i in inputs.items] == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("0", "camera0.mp4"),
        ("/dev/video2", "dev_video2.mp4"),
        ("rtsp://admin:secret@cam.local:554/live/ch1", "rtsp_cam.local_554_live_ch1.mp4"),
        ("http://127.0.0.1:8080/stream.mjpg?user=x", "http_127.0.0.1_8080_stream.mjpg.mp4"),
    ],
)
def test_live_sources_are_written_under_their_host_without_credentials(
    text: str, name: str
) -> None:
    inputs = resolve_inputs([text], open_live=False)
    plan_outputs(inputs)
    assert str(inputs.items[0].output) == name


def test_annotated_video_is_an_mp4_opencv_reads_back(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    clip = write_video(tmp_path / "in" / "clip.mp4", 12, size=(96, 64), fps=12.5)
    photo = write_image(tmp_path / "in" / "photo.webp", (40, 30))
    out = tmp_path / "out"
    inputs = resolve_inputs([str(clip), str(photo)])
    summary, lines, errors, _ = run_detect(inputs, annotate=out, max_frames=10)
    assert not errors and summary.frames == 10 and summary.images == 1
    assert [line["frame"] for line in lines] == [*range(10), None]
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "photo.webp"]
    count, shape, fps = read_video(out / "clip.mp4")
    assert (count, shape, fps) == (10, (64, 96, 3), 12.5)
    drawn = cv2.imread(str(out / "photo.webp"))
    assert drawn.shape == (30, 40, 3)
    assert drawn[15, 10, 1] > 200 and drawn[15, 10, 2] < 100  # BGR: a mask's green box edge


def test_an_interrupted_run_still_finishes_its_mp4(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 20)
    inputs = resolve_inputs([str(clip)])
    plan_outputs(inputs)
    progress = Progress(20, enabled=False)

    class Interrupting(FaceBackend):
        def detect(self, images: Sequence[InputImage], **kw: float) -> list[Detections]:
            if progress.done >= 8:
                raise KeyboardInterrupt
            return super().detect(images, **kw)  # type: ignore[arg-type]

    summary = detect_inputs(
        Interrupting(progress),
        inputs,
        conf=0.5,
        iou=0.4,
        batch_size=4,
        annotate=tmp_path / "out",
        progress=progress,
        on_error=lambda s, m: None,
        out=io.StringIO(),
    )
    assert summary.interrupted and summary.frames == 8
    assert read_video(tmp_path / "out" / "clip.mp4")[0] == 8


# --- progress and summary -----------------------------------------------------------------


def test_progress_counts_finished_items_not_items_read(tmp_path: Path) -> None:
    images = [write_image(tmp_path / f"{i}.png") for i in range(3)]
    clip = write_video(tmp_path / "clip.mp4", 8)
    inputs = resolve_inputs([*map(str, images), str(clip)])
    assert inputs.total(None, None) == 11
    stream = io.StringIO()
    progress = Progress(11, enabled=True, stream=stream)
    summary, lines, errors, backend = run_detect(inputs, batch_size=4, progress=progress)
    assert not errors and len(lines) == 11
    # The reader runs ahead (up to 8 items here) while the model runs; the bar counts only
    # the items whose detections came back: at each model call, the earlier calls' images.
    assert backend.calls == [(0, 4), (4, 4), (8, 3)]
    assert (progress.done, progress.total) == (11, 11)
    assert "11/11" in stream.getvalue().replace("\r", "\n").splitlines()[-1]
    assert (summary.images, summary.frames, summary.faces) == (3, 8, {"mask": 3, "no_mask": 8})


@pytest.mark.parametrize(
    ("max_frames", "duration", "total", "frames"),
    [
        (None, None, 8, 8),
        (5, None, 5, 5),
        (None, 0.35, 4, 4),  # 10 fps: video time 0, 0.1, 0.2, 0.3
        (20, None, 8, 8),
    ],
)
def test_video_limits_and_totals(
    tmp_path: Path, max_frames: int | None, duration: float | None, total: int, frames: int
) -> None:
    inputs = resolve_inputs([str(write_video(tmp_path / "clip.mp4", 8))])
    assert inputs.total(max_frames, duration) == total
    progress = Progress(total, enabled=False)
    summary, _, _, _ = run_detect(
        inputs, progress=progress, max_frames=max_frames, duration=duration
    )
    assert summary.frames == frames and (progress.done, progress.total) == (frames, frames)


def test_a_total_is_corrected_when_an_input_gives_fewer_items(tmp_path: Path) -> None:
    inputs = resolve_inputs([str(write_video(tmp_path / "clip.mp4", 6))])
    inputs.items[0].frames = 9  # as a container that over-declares its length would
    progress = Progress(inputs.total(None, None), enabled=False)
    assert progress.total == 9
    run_detect(inputs, progress=progress)
    assert (progress.done, progress.total) == (6, 6)


@pytest.mark.parametrize(
    ("choice", "tty", "enabled"),
    [(None, True, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_progress_shows_on_a_terminal_unless_told(
    choice: bool | None, tty: bool, enabled: bool
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert progress_enabled(choice, Stream()) is enabled


@pytest.mark.parametrize(
    ("summary", "line"),
    [
        (
            Summary(images=3, frames=50, faces={"mask": 120, "no_mask": 11}, elapsed=5.3, failed=1),
            "facemask detect: 3 images, 50 frames in 5.3 s (10.0/s); 131 faces: 120 mask, "
            "11 no_mask; 1 failed",
        ),
        (
            Summary(images=1, faces={"mask": 1, "no_mask": 0}, elapsed=0.5),
            "facemask detect: 1 image in 0.5 s (2.0/s); 1 face: 1 mask, 0 no_mask; 0 failed",
        ),
        (
            Summary(frames=7, elapsed=2.0, interrupted=True),
            "facemask detect: 7 frames in 2.0 s (3.5/s); 0 faces: 0 mask, 0 no_mask; 0 failed; "
            "interrupted",
        ),
        (
            Summary(),
            "facemask detect: 0 images in 0.0 s (0.0/s); 0 faces: 0 mask, 0 no_mask; 0 failed",
        ),
    ],
)
def test_summary_line(summary: Summary, line: str) -> None:
    assert summary.line() == line


def test_elapsed_and_rate_come_from_the_injected_clock(tmp_path: Path) -> None:
    ticks = iter(range(100))
    progress = Progress(2, enabled=False, clock=lambda: float(next(ticks)))
    inputs = resolve_inputs([str(write_image(tmp_path / f"{i}.png")) for i in range(2)])
    summary, _, _, _ = run_detect(inputs, progress=progress)
    assert summary.elapsed == 1.0  # created at tick 0, read once when done
    assert "2 images in 1.0 s (2.0/s)" in summary.line()


# --- streams (no model) -------------------------------------------------------------------


def test_a_stream_stops_after_its_duration_on_the_injected_clock() -> None:
    server = MjpegServer([np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)], fps=200)
    try:
        inputs = resolve_inputs([server.url()])
        assert [(i.kind, i.name) for i in inputs.items] == [("live", server.url())]
        assert inputs.total(None, 1.0) is None and inputs.total(3, 1.0) == 3
        now = [0.0]

        def clock() -> float:  # a tenth of a second per look
            now[0] += 0.1
            return now[0]

        errors: list[tuple[str, str]] = []
        frames = list(
            iter_inputs(
                inputs, duration=0.55, on_error=lambda s, m: errors.append((s, m)), clock=clock
            )
        )
    finally:
        inputs.close()
        server.close()
    assert not errors
    assert [f.frame for f in frames] == [0, 1, 2, 3, 4]  # looked at 0.1 (start) .. 0.6
    assert [int(f.rgb.mean()) // 10 for f in frames[:5]] == [0, 4, 8, 12, 16]  # served in order


def test_a_camera_that_does_not_open_is_one_early_error() -> None:
    inputs = resolve_inputs(["/dev/video99", "63"])
    assert inputs.items == []
    assert inputs.errors == [
        ("/dev/video99", "cannot open this camera"),
        ("63", "cannot open this camera"),
    ]
