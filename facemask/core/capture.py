"""Video as OpenCV reads and writes it: which text names a capture device, a network stream
or a local path, opening each with the right options, and the MP4 writer of annotated videos.

Source texts::

    0, 1, /dev/video0           a capture device (V4L2 on Linux)
    rtsp://..., http(s)://...   a network stream (also rtsps, rtmp(s), udp, tcp, srt)
    file:///path, path          a local path (whatever it holds: the caller decides)

Network streams are opened through OpenCV's bundled FFmpeg with open and read time-outs
(:data:`NETWORK_TIMEOUT_MS`), so an unreachable camera fails in seconds instead of hanging.
RTSP goes over TCP (OpenCV's default), HTTP(S) carries anything FFmpeg probes, MJPEG
(``multipart/x-mixed-replace``) included.

Nothing here prints a URL: messages name the problem only, and the caller names the source
(with its password masked, :func:`facemask.infra.redact.redact_url`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import cv2

CaptureKind = Literal["device", "url", "path"]

URL_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "udp", "tcp", "srt"})
NETWORK_TIMEOUT_MS = 10_000
"""Open and read time-out of a network stream."""
FALLBACK_FPS = 25.0
"""Frame rate of a source whose container or driver reports none that is usable."""
MP4_FOURCC = "mp4v"
"""Codec of annotated videos: MPEG-4 Part 2, which the FFmpeg inside the opencv-python wheels
always encodes (``avc1``/H.264 needs an encoder those wheels do not ship: opening it fails,
with FFmpeg's errors on stderr). VLC, ffplay and most players read it; browsers do not."""

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MAX_FRAME_COUNT = 1 << 31  # live streams report garbage (e.g. -2**63, or 2**63 - 1)


class SourceTextError(ValueError):
    """A source text that names no usable device, stream or path (the message does not
    repeat the text: it may hold a password)."""


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """A parsed source text: a ``device`` (``index``, or a device path as ``target``), a
    network stream (``url``) or a local ``path``."""

    kind: CaptureKind
    target: str
    index: int | None = None

    @property
    def live(self) -> bool:
        """A device or a stream: endless, read as fast as it delivers."""
        return self.kind != "path"


def parse_source_text(text: str) -> CaptureSpec:
    """Parse a source text (see the module docstring); the text is kept as given (no path
    normalisation: ``rtsp://host/x`` stays ``rtsp://host/x``). Raises
    :class:`SourceTextError`; does not check that a path exists."""
    if not text.strip():
        raise SourceTextError("empty source (expected a device index, a URL or a path)")
    stripped = text.strip()
    if re.fullmatch(r"[+-]?\d+", stripped):
        index = int(stripped)
        if index < 0:
            raise SourceTextError(f"device index {index} must be >= 0")
        return CaptureSpec("device", stripped, index)
    if stripped.startswith("/dev/"):
        return CaptureSpec("device", stripped)
    match = _SCHEME_RE.match(stripped)
    if match is None:
        return CaptureSpec("path", text)
    scheme = match.group(1).lower()
    if scheme == "file":
        path = urlsplit(stripped).path
        if not path:
            raise SourceTextError("file URL without a path")
        return CaptureSpec("path", path)
    if scheme not in URL_SCHEMES:
        raise SourceTextError(
            f"unsupported URL scheme {scheme!r} "
            f"(supported: {', '.join(sorted(URL_SCHEMES | {'file'}))})"
        )
    if not urlsplit(stripped).hostname:
        raise SourceTextError("URL without a host")
    return CaptureSpec("url", stripped)


def open_capture(spec: CaptureSpec) -> cv2.VideoCapture:
    """An OpenCV capture of ``spec`` (check ``isOpened()``): devices by index or path,
    network streams through FFmpeg with :data:`NETWORK_TIMEOUT_MS`, files as OpenCV probes
    them."""
    if spec.kind == "device" and spec.index is not None:
        return cv2.VideoCapture(spec.index)
    if spec.kind == "url":
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            NETWORK_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            NETWORK_TIMEOUT_MS,
        ]
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(spec.target)


def capture_fps(capture: cv2.VideoCapture) -> float:
    """The frame rate ``capture`` reports, or :data:`FALLBACK_FPS` when it reports none
    that is plausible (1..1000)."""
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 1000.0 else FALLBACK_FPS


def capture_frame_count(capture: cv2.VideoCapture) -> int | None:
    """The frame count a video file's container declares; None when unknown (streams)."""
    count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
    return int(count) if 0 < count < _MAX_FRAME_COUNT else None


def open_mp4_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
    """An MP4 writer (:data:`MP4_FOURCC`) of BGR frames of ``size`` (width, height) at
    ``fps``; None when OpenCV cannot open it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*MP4_FOURCC), fps, size)
    if not writer.isOpened():
        writer.release()
        return None
    return writer


def quiet_video_logs() -> None:
    """Keep OpenCV's warnings and FFmpeg's messages (``[tcp @ 0x..] Connection refused``)
    off stderr, for a command that reports each failure in its own words; a variable the
    user set (``OPENCV_LOG_LEVEL``, ``OPENCV_FFMPEG_LOGLEVEL``) wins. Call it before the
    first capture is opened: FFmpeg's level is read then."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
