"""What ``facemask detect`` reads and what ``--annotate`` writes.

**Inputs.** Each argument is one of:

* an image file: JPEG, PNG, BMP or WebP (its size header judged before it is read whole or
  decoded: :func:`~facemask.core.preprocess.read_image_file`, the project's pixel limit);
* a video file (by extension, :data:`VIDEO_SUFFIXES`; a file with another extension that is
  no image is probed with OpenCV; other still-image formats, :data:`OTHER_IMAGE_SUFFIXES`,
  are refused by name, and frames over the pixel limit by the size the container declares);
* a directory: its images and videos, recursively (``recursive=False``: only its own
  files), hidden entries skipped, sorted by relative path (case-insensitively, directory
  by directory: ``a.jpg``, ``B/c.jpg``, ``d.jpg``); ``glob`` keeps the files whose
  name (or, for a pattern with ``/``, whose path relative to the directory) matches it,
  case-insensitively, whatever their extension;
* a capture device (``0``, ``/dev/video0``; digits always name a device: ``./0`` is a
  file) or a stream URL (``rtsp://``, ``http(s)://`` MJPEG or anything FFmpeg reads...):
  :func:`facemask.core.capture.parse_source_text`.

:func:`resolve_inputs` does all of this before the model is loaded: a missing path, an
empty directory, an unknown URL scheme or a camera that does not open is reported at once.
Video files are opened there to learn their frame count (the progress bar's total); devices
and streams are opened there and kept open for reading. Names are kept as given: paths as
written (joined with the directory's entries), URLs with their password masked - never
``rtsp:/host`` as :class:`pathlib.Path` would make of ``rtsp://host``.

**Annotated outputs** (:func:`plan_outputs`) mirror the input paths under ``--annotate DIR``,
relative to the common root of the inputs (a directory argument counts as itself, a file as
its parent), so two inputs with the same file name in different directories never collide.
Images keep their format; videos, devices and streams become MP4 (``clip.avi`` ->
``clip.avi.mp4``; devices and streams at the top: ``camera0.mp4``,
``rtsp_cam.local_554_live.mp4``). A name still taken (the same file given twice) gets
``~2``, ``~3``... before its suffix.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

import cv2
import numpy as np

from facemask.core.annotate import annotate
from facemask.core.capture import (
    FALLBACK_FPS,
    CaptureSpec,
    SourceTextError,
    capture_fps,
    capture_frame_count,
    open_capture,
    open_mp4_writer,
    parse_source_text,
)
from facemask.core.preprocess import (
    IMAGE_FORMATS,
    MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    image_format,
    read_image_file,
)
from facemask.core.types import Detections
from facemask.infra.redact import redact_url

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp"})
"""Extensions read as images (the formats of :data:`facemask.core.preprocess.IMAGE_FORMATS`);
an annotated image keeps its extension, so its format."""
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
OTHER_IMAGE_SUFFIXES = frozenset(
    {".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".jp2", ".j2k", ".exr"}
    | {".hdr", ".pic", ".sr", ".ras", ".avif", ".heic", ".heif"}
)
"""Still-image formats refused by name: FFmpeg would open them as one-frame videos, past
the size-header check that guards the image formats."""
InputKind = Literal["image", "video", "live"]
ErrorHandler = Callable[[str, str], None]
"""``on_error(source name, message)``: one input failed; the others go on."""


@dataclass(slots=True)
class InputImage:
    """One still image or video frame to run detection on (RGB uint8) and the index of its
    input in :attr:`Inputs.items`."""

    source: str
    frame: int | None
    rgb: np.ndarray
    width: int
    height: int
    input: int = 0


@dataclass(slots=True, eq=False)
class Input:
    """One image, video file, device or stream to read.

    ``name`` is what results and messages call it; ``path`` the local file (None for a
    device or stream) and ``anchor`` the directory it mirrors from under ``--annotate``;
    ``frames`` the frame count a video declares (None: unknown or endless); ``capture``
    the device or stream opened by :func:`resolve_inputs`.
    """

    kind: InputKind
    name: str
    path: Path | None = None
    anchor: Path | None = None
    spec: CaptureSpec | None = None
    frames: int | None = None
    fps: float = 0.0
    capture: cv2.VideoCapture | None = None
    output: PurePosixPath | None = None

    def expected(self, max_frames: int | None, duration: float | None) -> int | None:
        """Frames this input will give at most (None: unknown, e.g. an endless stream)."""
        if self.kind == "image":
            return 1
        if self.kind == "live":  # endless: as many as --max-frames lets through
            return max_frames
        limits = [n for n in (self.frames, max_frames) if n is not None]
        if duration is not None:
            limits.append(math.ceil(duration * self.fps - 1e-9))
        return min(limits) if limits else None


@dataclass(slots=True)
class Inputs:
    """The resolved inputs, in order, and the arguments that failed (name, message)."""

    items: list[Input] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def close(self) -> None:
        """Release the devices and streams still open."""
        for item in self.items:
            if item.capture is not None:
                item.capture.release()
                item.capture = None

    def total(self, max_frames: int | None, duration: float | None) -> int | None:
        """Images and frames the inputs will give (None when any is unknown)."""
        counts = [item.expected(max_frames, duration) for item in self.items]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


def display_name(text: str) -> str:
    """An argument as messages may show it: URLs with the password masked."""
    return redact_url(text)


def resolve_inputs(
    args: Sequence[str],
    *,
    glob: str | None = None,
    recursive: bool = True,
    skip: Path | None = None,
    open_live: bool = True,
) -> Inputs:
    """Classify, expand and check ``args`` without loading the model (see the module
    docstring). Directories are searched without entering ``skip`` (the ``--annotate``
    directory: a run over ``photos/`` writing into ``photos/annotated/`` does not read its
    earlier outputs back); ``open_live=False`` leaves devices and streams closed (for tests).
    """
    out = Inputs()
    skipped = os.path.abspath(skip) if skip is not None else None
    for arg in args:
        name = display_name(arg)
        try:
            spec = parse_source_text(arg)
        except SourceTextError as exc:
            out.errors.append((name, str(exc)))
            continue
        if spec.live:
            item = Input("live", name, spec=spec)
            if open_live and not _open_live(item, out.errors):
                continue
            out.items.append(item)
            continue
        path = Path(spec.target)
        if path.is_dir():
            files = list(_walk(path, glob, recursive, skipped, out.errors))
            if not files:
                what = f"no files matching {glob!r}" if glob else "no images or videos"
                out.errors.append((name, f"{what} in this directory"))
            for file in files:
                _add_file(out, file, path)
        elif not path.exists():
            out.errors.append((name, "no such file or directory"))
        elif not path.is_file():
            out.errors.append((name, "neither a regular file nor a directory"))
        else:
            _add_file(out, path, path.parent)
    return out


def _walk(
    root: Path,
    glob: str | None,
    recursive: bool,
    skip: str | None,
    errors: list[tuple[str, str]],
) -> Iterator[Path]:
    """The files of ``root`` to read, sorted by relative path."""

    def failed(exc: OSError) -> None:
        errors.append((exc.filename or str(root), f"cannot list: {exc.strerror or exc}"))

    pattern = glob.lower() if glob else None
    found: list[tuple[tuple[tuple[str, ...], tuple[str, ...]], Path]] = []
    for directory, subdirs, names in os.walk(root, onerror=failed):
        base = Path(directory)
        subdirs[:] = (
            sorted(
                d for d in subdirs if not d.startswith(".") and os.path.abspath(base / d) != skip
            )
            if recursive
            else []
        )
        for name in names:
            if name.startswith("."):
                continue
            relative = (base / name).relative_to(root)
            if pattern is None:
                keep = Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            else:
                subject = relative.as_posix() if "/" in pattern else name
                keep = fnmatch.fnmatchcase(subject.lower(), pattern)
            if keep and (base / name).is_file():
                parts = relative.parts
                found.append(((tuple(p.lower() for p in parts), parts), base / name))
    for _, path in sorted(found):
        yield path


def _add_file(out: Inputs, path: Path, anchor: Path) -> None:
    """An image or a video file (the latter probed for its frame count and rate)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or (suffix not in VIDEO_SUFFIXES and _sniff_image(path)):
        out.items.append(Input("image", str(path), path=path, anchor=anchor))
        return
    if suffix in OTHER_IMAGE_SUFFIXES:
        message = "unsupported image format (JPEG, PNG, BMP and WebP are read)"
        out.errors.append((str(path), message))
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            known = suffix in VIDEO_SUFFIXES
            out.errors.append(
                (
                    str(path),
                    "cannot open this video" if known else "not an image or a video OpenCV reads",
                )
            )
            return
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width * height > MAX_PIXELS:
            out.errors.append(
                (str(path), f"{width}x{height} frames exceed the {MAX_PIXELS} pixel limit")
            )
            return
        item = Input("video", str(path), path=path, anchor=anchor)
        item.frames = capture_frame_count(capture)
        item.fps = capture_fps(capture)
        out.items.append(item)
    finally:
        capture.release()


def _sniff_image(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return image_format(f.read(16)) is not None
    except OSError:
        return False


def _open_live(item: Input, errors: list[tuple[str, str]]) -> bool:
    assert item.spec is not None
    capture = open_capture(item.spec)
    if not capture.isOpened():
        capture.release()
        what = "this camera" if item.spec.kind == "device" else "this stream"
        errors.append((item.name, f"cannot open {what}"))
        return False
    item.capture = capture
    item.fps = capture_fps(capture)
    return True


# --- reading ----------------------------------------------------------------------------


def iter_inputs(
    inputs: Inputs,
    *,
    decode: str = "full",
    max_frames: int | None = None,
    duration: float | None = None,
    on_error: ErrorHandler,
    on_end: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[InputImage]:
    """Every image and video frame of ``inputs`` in order. Each video or stream stops after
    ``max_frames`` frames or ``duration`` seconds (of video time for a file, of reading for
    a device or stream, on ``clock``). ``on_end(input index, frames read)`` follows the last
    frame of each input. Unreadable inputs are reported through ``on_error`` and skipped.
    """
    for index, item in enumerate(inputs.items):
        if item.kind == "image":
            assert item.path is not None
            images = list(_read_image(item, index, decode, on_error))
            yield from images
            count = len(images)
        else:
            count = 0
            for image in _read_frames(item, index, max_frames, duration, on_error, clock):
                count += 1
                yield image
        if on_end is not None:
            on_end(index, count)


def _read_image(
    item: Input, index: int, decode: str, on_error: ErrorHandler
) -> Iterator[InputImage]:
    assert item.path is not None
    try:  # the header is judged before the file is read whole and before any decode
        data = read_image_file(item.path, formats=IMAGE_FORMATS)
        decoded = decode_image(data, reduce=decode, formats=IMAGE_FORMATS)
    except OSError as exc:
        on_error(item.name, f"cannot read: {exc.strerror or exc}")
        return
    except ImageDecodeError as exc:
        on_error(item.name, f"not a readable image ({exc})")
        return
    yield InputImage(item.name, None, decoded.rgb, decoded.width, decoded.height, index)


def _read_frames(
    item: Input,
    index: int,
    max_frames: int | None,
    duration: float | None,
    on_error: ErrorHandler,
    clock: Callable[[], float],
) -> Iterator[InputImage]:
    live = item.kind == "live"
    capture = item.capture
    item.capture = None
    if capture is None:
        assert item.spec is not None or item.path is not None
        capture = open_capture(item.spec) if item.spec else cv2.VideoCapture(str(item.path))
    try:
        if not capture.isOpened():
            on_error(item.name, "cannot open this video")
            return
        fps = item.fps or capture_fps(capture)
        started = clock()
        frame = 0
        while max_frames is None or frame < max_frames:
            if duration is not None:
                elapsed = clock() - started if live else frame / fps
                if elapsed >= duration - 1e-9:
                    break
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            height, width = bgr.shape[:2]
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield InputImage(item.name, frame, rgb, width, height, index)
            frame += 1
        if frame == 0:
            what = "stream" if live else "video"
            on_error(item.name, f"no frames could be decoded from this {what}")
    finally:
        capture.release()


# --- annotated outputs ------------------------------------------------------------------


def plan_outputs(inputs: Inputs) -> None:
    """Set each input's :attr:`Input.output`: its path under ``--annotate`` (see the module
    docstring)."""
    anchors = [os.path.abspath(i.anchor) for i in inputs.items if i.anchor is not None]
    root = os.path.commonpath(anchors) if anchors else ""
    taken: set[str] = set()
    for item in inputs.items:
        if item.path is not None:
            relative = PurePosixPath(Path(os.path.relpath(os.path.abspath(item.path), root)))
            name = relative.name
            if item.kind == "video" and relative.suffix.lower() != ".mp4":
                relative = relative.with_name(f"{name}.mp4")
            elif item.kind == "image" and relative.suffix.lower() not in IMAGE_SUFFIXES:
                relative = relative.with_name(f"{name}.png")
        else:
            assert item.spec is not None
            relative = PurePosixPath(f"{_live_stem(item.spec)}.mp4")
        item.output = _untaken(relative, taken)


def _live_stem(spec: CaptureSpec) -> str:
    """``camera0``, ``dev_video0``, ``rtsp_host_554_live`` (never the user or password)."""
    if spec.kind == "device":
        return f"camera{spec.index}" if spec.index is not None else _safe(spec.target)
    parts = urlsplit(spec.target)
    port = f"_{parts.port}" if parts.port is not None else ""
    return _safe(f"{parts.scheme}_{parts.hostname}{port}_{parts.path}")


def _safe(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]", "_", text)).strip("_.") or "stream"


def _untaken(path: PurePosixPath, taken: set[str]) -> PurePosixPath:
    candidate, n = path, 1
    while candidate.as_posix().lower() in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}~{n}{path.suffix}")
    taken.add(candidate.as_posix().lower())
    return candidate


class AnnotatedWriter:
    """Writes each image or frame with its detections drawn (:func:`annotate`) to its
    input's :attr:`Input.output` under ``directory``: images in their format, the frames of
    a video or stream into one MP4 (:func:`~facemask.core.capture.open_mp4_writer`, at the
    input's frame rate; a frame of another size is resized to the first). Call
    :meth:`close` (also after an interruption: it finishes the open MP4 files)."""

    def __init__(self, directory: Path, inputs: Inputs, on_error: ErrorHandler) -> None:
        self.directory = directory
        self.inputs = inputs
        self.on_error = on_error
        self._videos: dict[int, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self._failed: set[int] = set()

    def write(self, image: InputImage, detections: Detections) -> None:
        """Draw and write one result."""
        if image.input in self._failed:
            return
        item = self.inputs.items[image.input]
        assert item.output is not None
        target = self.directory / item.output
        drawn = cv2.cvtColor(annotate(image.rgb, detections), cv2.COLOR_RGB2BGR)
        if image.frame is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), drawn):
                self._fail(image.input, target, "cannot write the annotated image")
            return
        self._finish_others(image.input)
        size = (drawn.shape[1], drawn.shape[0])
        if image.input not in self._videos:
            target.parent.mkdir(parents=True, exist_ok=True)
            writer = open_mp4_writer(target, item.fps or FALLBACK_FPS, size)
            if writer is None:
                self._fail(image.input, target, "cannot write an MP4 video here")
                return
            self._videos[image.input] = (writer, size)
        writer, first = self._videos[image.input]
        if size != first:
            drawn = cv2.resize(drawn, first, interpolation=cv2.INTER_AREA)
        writer.write(drawn)

    def _fail(self, index: int, target: Path, message: str) -> None:
        self._failed.add(index)
        self.on_error(str(target), message)

    def _finish_others(self, index: int) -> None:
        """Inputs are read in order: a frame of ``index`` means the others are done."""
        for other in [i for i in self._videos if i != index]:
            self._videos.pop(other)[0].release()

    def close(self) -> None:
        """Finish every open MP4 file."""
        for writer, _ in self._videos.values():
            writer.release()
        self._videos.clear()
