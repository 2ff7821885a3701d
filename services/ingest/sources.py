"""Frame sources read through OpenCV, with the frame-rate cap applied at the source.

Source specs (``--camera source=...``)::

    0, 1, /dev/video0           a capture device (V4L2 on Linux)
    rtsp://..., http(s)://...   a network stream (also rtsps, rtmp, udp, tcp, srt)
    path/to/clip.mp4            a video file (played in real time; ``loop`` to repeat)
    path/to/dir/, photo.jpg     a directory of images (looping slideshow) or one image
    file:///path                a local path written as a URL

The cap drops frames *before* the expensive part, never queues them:

* live sources (device, URL) ``grab()`` every frame the camera delivers, so the driver's
  buffer never fills with stale frames, and ``retrieve()`` (the colour conversion) only the
  frames kept by the wall clock;
* video files are read at their own rate and a frame is kept when its *video* timestamp
  reaches the next slot (every k-th frame for a 25 fps file at 5 fps); kept frames are
  released at the wall-clock time they would be shown, unless ``realtime=false``;
* image slideshows show the next image every ``1/fps`` seconds.

``read()`` returns the next kept frame, ``None`` once asked to stop, raises
:class:`SourceEnded` at the end of a non-looping file and :class:`SourceError` when the
source fails (the camera loop then reconnects with backoff).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from facemask.core.capture import (
    FALLBACK_FPS,
    CaptureSpec,
    SourceTextError,
    capture_fps,
    open_capture,
    parse_source_text,
)
from facemask.core.preprocess import ImageDecodeError, decode_image, read_image_file
from facemask.infra.redact import redact_url

logger = logging.getLogger(__name__)

SourceKind = Literal["device", "file", "url", "images"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)
# A slideshow reads only the formats whose size header is checked before the decode (so a
# small file that claims to be 16000x16000 pixels is refused, not decoded into gigabytes).
SLIDESHOW_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
# A file whose container reports no usable frame rate is played at this rate.
FALLBACK_FILE_FPS = FALLBACK_FPS
# Real-time playback more than this far behind the wall clock re-bases instead of bursting.
MAX_LAG_S = 1.0
_EPS = 1e-6


class SourceError(RuntimeError):
    """The source cannot be opened or stopped delivering frames (retry with backoff)."""


class SourceEnded(Exception):  # noqa: N818 - an end-of-stream signal, not an error
    """A non-looping file reached its end."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed source spec."""

    kind: SourceKind
    target: str
    device_index: int | None = None

    @property
    def redacted(self) -> str:
        """The target with any URL password masked (for logs and the registry)."""
        return redact_url(self.target) if self.kind == "url" else self.target


def parse_source(spec: str, *, check_exists: bool = True) -> SourceSpec:
    """Parse a source spec; raise :class:`ValueError` with a clear message when unusable.

    Devices and URLs are told apart by :func:`facemask.core.capture.parse_source_text` (the
    command line's ``detect`` reads the same texts). With ``check_exists`` a local path must
    exist (a typo fails at start); a file deleted later is a run-time :class:`SourceError`
    retried with backoff instead.
    """
    try:
        parsed = parse_source_text(spec)
    except SourceTextError as exc:
        raise ValueError(f"source {redact_url(spec)!r}: {exc}") from None
    if parsed.kind == "device":
        return SourceSpec("device", parsed.target, parsed.index)
    if parsed.kind == "url":
        return SourceSpec("url", parsed.target)
    text = parsed.target.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("images", str(path))
    if path.exists() and not path.is_file():
        raise ValueError(f"source {text!r} is neither a regular file nor a directory")
    if check_exists and not path.exists():
        raise ValueError(
            f"source {text!r}: no such file or directory (expected a device index such as 0, "
            "an rtsp:// or http:// URL, a video file or a directory of images)"
        )
    kind: SourceKind = "images" if path.suffix.lower() in IMAGE_EXTENSIONS else "file"
    return SourceSpec(kind, str(path))


@dataclass(slots=True)
class Captured:
    """One frame kept by the rate cap: BGR image and its capture time (unix seconds)."""

    image: np.ndarray
    ts: float


def _wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


class FrameSource(ABC):
    """Common state: the target rate and the count of frames dropped by the cap.

    Time is injected: ``clock`` (monotonic seconds: pacing), ``wall`` (unix seconds: the
    capture time stamped on frames) and ``wait(stop, seconds)`` (True when ``stop`` was
    set meanwhile), so tests drive pacing with a fake clock instead of sleeping.
    """

    def __init__(
        self,
        spec: SourceSpec,
        fps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wait: Callable[[threading.Event, float], bool] = _wait,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.spec = spec
        self.fps = fps
        self.period = 1.0 / fps
        self.clock = clock
        self.wall = wall
        self.wait = wait
        self._skipped = 0

    @abstractmethod
    def open(self) -> None:
        """Open the source; raise :class:`SourceError` when it cannot be opened."""

    @abstractmethod
    def read(self, stop: threading.Event) -> Captured | None:
        """The next kept frame; ``None`` when ``stop`` is set."""

    @abstractmethod
    def close(self) -> None:
        """Release the source (idempotent)."""

    def take_skipped(self) -> int:
        """Frames dropped by the rate cap since the last call."""
        skipped, self._skipped = self._skipped, 0
        return skipped


def _video_capture(spec: SourceSpec) -> cv2.VideoCapture:
    kind = spec.kind if spec.kind in ("device", "url") else "path"
    return open_capture(CaptureSpec(kind, spec.target, spec.device_index))


class LiveSource(FrameSource):
    """A capture device or a network stream: grab everything, retrieve what the cap keeps."""

    def __init__(self, spec: SourceSpec, fps: float, **timing: Any) -> None:
        super().__init__(spec, fps, **timing)
        self._cap: cv2.VideoCapture | None = None
        self._next_due = 0.0

    def open(self) -> None:
        self.close()
        cap = _video_capture(self.spec)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.spec.kind} {self.spec.redacted}")
        self._cap = cap
        self._next_due = 0.0

    def read(self, stop: threading.Event) -> Captured | None:
        cap = self._cap
        if cap is None:
            raise SourceError("source not open")
        while not stop.is_set():
            if not cap.grab():
                raise SourceError(f"{self.spec.kind} {self.spec.redacted} delivered no frame")
            ts = self.wall()
            now = self.clock()
            if now + _EPS < self._next_due:
                self._skipped += 1
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                raise SourceError(f"cannot decode a frame of {self.spec.redacted}")
            due = self._next_due + self.period
            self._next_due = due if due > now else now + self.period
            return Captured(image, ts)
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FileSource(FrameSource):
    """A video file: keep frames by video time, release them in real time, optionally loop."""

    def __init__(
        self,
        spec: SourceSpec,
        fps: float,
        *,
        loop: bool = False,
        realtime: bool = True,
        **timing: Any,
    ) -> None:
        super().__init__(spec, fps, **timing)
        self.loop = loop
        self.realtime = realtime
        self.source_fps = FALLBACK_FILE_FPS
        self.passes = 0
        self._cap: cv2.VideoCapture | None = None
        self._index = 0  # frame index within the current pass
        self._offset = 0.0  # video time of the start of the current pass
        self._next_due = 0.0  # video time of the next frame to keep
        self._wall_base = 0.0  # monotonic time at which video time 0 is shown

    def _open_capture(self) -> None:
        if not Path(self.spec.target).is_file():
            raise SourceError(f"video file {self.spec.target} not found")
        cap = cv2.VideoCapture(self.spec.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {self.spec.target}")
        self.source_fps = capture_fps(cap)
        self._cap = cap
        self._index = 0

    def open(self) -> None:
        self.close()
        self._open_capture()
        self._offset = 0.0
        self._next_due = 0.0
        self._wall_base = self.clock()
        self.passes = 0

    def _restart(self) -> None:
        """Next pass of a looping file: reopen (notices a deleted or replaced file)."""
        self._offset += self._index / self.source_fps
        self.passes += 1
        self.close()
        self._open_capture()

    def read(self, stop: threading.Event) -> Captured | None:
        while not stop.is_set():
            cap = self._cap
            if cap is None:
                raise SourceError("source not open")
            if not cap.grab():
                if self._index == 0:
                    raise SourceError(f"no frame could be read from {self.spec.target}")
                if not self.loop:
                    raise SourceEnded(self.spec.target)
                self._restart()
                continue
            t_video = self._offset + self._index / self.source_fps
            self._index += 1
            if t_video + _EPS < self._next_due:
                self._skipped += 1
                continue
            due = self._next_due + self.period
            self._next_due = due if due > t_video else t_video + self.period
            ok, image = cap.retrieve()
            if not ok or image is None:
                raise SourceError(f"cannot decode frame {self._index - 1} of {self.spec.target}")
            if self.realtime:
                delay = self._wall_base + t_video - self.clock()
                if delay > 0:
                    if self.wait(stop, delay):
                        return None
                elif delay < -MAX_LAG_S:
                    self._wall_base -= delay  # far behind (slow CPU, suspend): re-base
            return Captured(image, self.wall())
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageDirSource(FrameSource):
    """A slideshow over the JPEG/PNG images of a directory (sorted by name), or over one.

    The directory is listed again at every pass, so images added or removed are noticed;
    a directory that is gone or holds no readable image is a :class:`SourceError`. Every
    image is read through :func:`~facemask.core.preprocess.read_image_file` and
    :func:`~facemask.core.preprocess.decode_image`: its size header is judged against the
    project's pixel limit before any decode; an image refused is skipped (logged once).
    """

    def __init__(
        self,
        spec: SourceSpec,
        fps: float,
        *,
        loop: bool = True,
        realtime: bool = True,
        **timing: Any,
    ) -> None:
        super().__init__(spec, fps, **timing)
        self.loop = loop
        self.realtime = realtime
        self.passes = 0
        self._files: list[Path] = []
        self._pos = 0
        self._next_due = 0.0
        self._opened = False
        self._refused: set[Path] = set()

    def _list(self) -> list[Path]:
        root = Path(self.spec.target)
        if root.is_file():
            if root.suffix.lower() not in SLIDESHOW_EXTENSIONS:
                raise SourceError(f"{root}: only JPEG and PNG images can be shown; convert it")
            return [root]
        if not root.is_dir():
            raise SourceError(f"image source {root} not found")
        try:
            files = sorted(
                p
                for p in root.iterdir()
                if p.suffix.lower() in SLIDESHOW_EXTENSIONS and p.is_file()
            )
        except OSError as exc:
            raise SourceError(f"cannot list {root}: {exc}") from exc
        if not files:
            raise SourceError(f"no JPEG or PNG images in {root}")
        return files

    def open(self) -> None:
        self._files = self._list()
        self._pos = 0
        self._next_due = self.clock()
        self._opened = True
        self.passes = 0

    def _next_image(self) -> np.ndarray:
        unreadable = 0
        while True:
            if self._pos >= len(self._files):
                if not self.loop:
                    raise SourceEnded(self.spec.target)
                self._files = self._list()
                self._pos = 0
                self.passes += 1
            path = self._files[self._pos]
            self._pos += 1
            try:
                data = read_image_file(path)
                return decode_image(data, reduce="full", bgr=True).rgb
            except (OSError, ImageDecodeError) as exc:
                if path not in self._refused:
                    self._refused.add(path)
                    logger.warning("image skipped", extra={"path": str(path), "error": str(exc)})
            unreadable += 1
            if unreadable >= len(self._files):
                raise SourceError(f"no readable image in {self.spec.target}")

    def read(self, stop: threading.Event) -> Captured | None:
        if not self._opened:
            raise SourceError("source not open")
        if self.realtime:
            delay = self._next_due - self.clock()
            if delay > 0 and self.wait(stop, delay):
                return None
        if stop.is_set():
            return None
        image = self._next_image()
        now = self.clock()
        due = self._next_due + self.period
        self._next_due = due if due > now - MAX_LAG_S else now + self.period
        return Captured(image, self.wall())

    def close(self) -> None:
        self._opened = False


def open_source(
    spec: SourceSpec, fps: float, *, loop: bool | None = None, realtime: bool = True
) -> FrameSource:
    """The source object for ``spec`` (not yet opened). ``loop=None``: the kind's default
    (image slideshows loop, video files play once)."""
    if spec.kind in ("device", "url"):
        return LiveSource(spec, fps)
    if spec.kind == "file":
        return FileSource(spec, fps, loop=bool(loop), realtime=realtime)
    return ImageDirSource(spec, fps, loop=True if loop is None else loop, realtime=realtime)
