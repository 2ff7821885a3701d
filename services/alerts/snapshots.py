"""Annotated pictures: alert snapshots on disk, and the dashboard's live frames.

A snapshot is the alert's frame, fetched from the partition's frame stream by id
(``XRANGE sid sid``), with every face of its detections entry drawn by
:func:`facemask.core.annotate.annotate` (green ``mask`` / red ``no_mask``, each with its
label and score, "no_mask 0.93"), the violator(s) in their own colour (amber) on top, and a
crop of each violator's face in a panel beside the frame
(:func:`facemask.core.annotate.crops_beside`): :func:`render_alert`. The 320 px wide
thumbnail is drawn at its own size (not shrunk from the snapshot), labelling only the
violators, so its boxes and labels stay legible.

Files: ``<snapshot_dir>/<YYYY-MM-DD>/<alert id>.jpg``, the thumbnail
``<alert id>.thumb.jpg`` for the dashboard's alert feed, and the clean frame
``<alert id>.frame.jpg`` (``.png`` for a PNG frame): the frame stream's bytes exactly as
captured, never re-encoded, for review and the training export. All are written atomically
(temporary file, then rename) and share one retention: files older than ``max_age``
seconds are deleted, then the oldest files until the total is at most ``max_bytes``.

The frame streams are trimmed (``MAXLEN ~``); an alert whose frame is already gone is
still raised, without a picture, and counted by ``facemask_alert_snapshots_missing_total``.

:class:`LatestFrames` renders each camera's most recent detections entry on its frame for
the dashboard, at most once per ``min_interval`` per camera whatever the number of
browsers, and caches the JPEG (the API answers ``304`` for a frame a browser already has).

Memory is bounded by construction (issue 13): every frame goes through the one
:func:`~facemask.core.preprocess.decode_image`, which checks the frame entry's declared
size and the pixel limit against the image header *before* decoding (a frame whose header
disagrees with its entry gets no picture: ``size_mismatch``, reported through
``on_reject``); pictures are decoded at a reduced JPEG scale whenever the output is capped
(``max_side``; alert snapshots at :data:`SNAPSHOT_MAX_SIDE`); at most
``max_concurrent`` decodes run at once whatever the number of cameras and browsers; and
the cache of latest pictures holds at most ``max_entries`` cameras and ``max_bytes`` of
JPEG (least recently used evicted first).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemask.contracts.wire import FrameEntry, WireError, parse_detections
from facemask.core.annotate import annotate, crops_beside
from facemask.core.preprocess import ImageDecodeError, decode_image
from facemask.core.types import Detections
from facemask.infra.redisconn import RedisClient

logger = logging.getLogger(__name__)

THUMB_WIDTH = 320
"""Width of a thumbnail, its crop panel included."""
PANEL_SHARE = 1 / 3
"""Width of the violators' crop panel, as a share of the frame's width."""
FRAME_SUFFIX = {"jpeg": ".frame.jpg", "png": ".frame.png"}
"""File name ending of a kept clean frame, by frame encoding."""
PICTURE_SUFFIXES = (".jpg", ".png")
SNAPSHOT_MAX_SIDE = 1920
"""Longest side of an alert snapshot (larger frames are decoded reduced, then scaled)."""
LOCK_STRIPES = 64
"""Per-camera render locks are striped: a fixed number, whatever the number of cameras."""

RejectObserver = Callable[[str], None]
"""Called with the reason (``size_mismatch``, ``too_large``, ...) of a frame not drawn."""


def fetch_frame(client: RedisClient, frames_stream: str, sid: str) -> FrameEntry | None:
    """The frame entry ``sid`` of ``frames_stream``; None when trimmed or unreadable."""
    reply: Any = client.xrange(frames_stream, min=sid, max=sid, count=1)
    if not reply:
        return None
    try:
        return FrameEntry.from_fields(reply[0][1])
    except WireError as exc:
        logger.warning("frame entry unreadable", extra={"sid": sid, "reason": exc.reason})
        return None


def decode_bgr(
    frame: FrameEntry,
    max_side: int = 0,
    *,
    on_reject: RejectObserver | None = None,
) -> np.ndarray | None:
    """The frame's pixels (BGR), scaled down so the longer side is at most ``max_side``;
    None when it does not decode, breaks the pixel limit or is not the size its entry
    declares (``on_reject`` gets the reason).

    Decoded by the one :func:`~facemask.core.preprocess.decode_image`: the declared size
    and the pixel limit are checked on the header first, and a large JPEG is decoded at a
    reduced scale that still covers ``max_side``.
    """
    reduce, min_size = "full", (1, 1)
    longest = max(frame.width, frame.height)
    if max_side and longest > max_side:
        reduce = "auto"
        min_size = (
            max(1, -(-frame.width * max_side // longest)),
            max(1, -(-frame.height * max_side // longest)),
        )
    try:
        image = decode_image(
            frame.data,
            reduce=reduce,
            min_size=min_size,
            expect_size=(frame.width, frame.height),
            bgr=True,
        ).rgb
    except ImageDecodeError as exc:
        logger.warning(
            "frame not drawn",
            extra={
                "camera_id": frame.camera_id,
                "frame_id": frame.frame_id,
                "reason": exc.reason,
                "detail": exc.detail,
            },
        )
        if on_reject is not None:
            on_reject(exc.reason)
        return None
    height, width = image.shape[:2]
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def ignored_rows(latest: Mapping[str, Any]) -> list[int]:
    """The rows of a latest-entry record that the camera's zones dropped (its
    ``ignored`` indices; absent in records of older versions; anything malformed in a
    stored record is ignored rather than drawn wrong)."""
    raw = latest.get("ignored") or []
    count = len(latest.get("dets") or [])
    if not isinstance(raw, list):
        return []
    return [int(i) for i in raw if isinstance(i, int) and 0 <= i < count]


def render(
    frame: FrameEntry,
    detections: Detections,
    *,
    max_side: int = SNAPSHOT_MAX_SIDE,
    on_reject: RejectObserver | None = None,
    muted: Sequence[int] = (),
) -> np.ndarray | None:
    """The frame with its detections drawn (BGR), its longer side at most ``max_side``
    (0: full size), the ``muted`` rows (faces an ignore mask drops) in grey; None when the
    image does not decode or is not the size its entry declares (see :func:`decode_bgr`).

    The boxes are image-relative, so they land right on a frame decoded at reduced scale.
    """
    image = decode_bgr(frame, max_side, on_reject=on_reject)
    if image is None:
        return None
    return annotate(
        image, detections, bgr=True, copy=False, muted=np.asarray(muted, dtype=np.int64)
    )


Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class AlertPictures:
    """The drawn pictures of an alert (BGR)."""

    image: np.ndarray
    """The frame (longer side at most ``max_side``) with the crop panel beside it."""
    thumbnail: np.ndarray
    """:data:`THUMB_WIDTH` wide, panel included."""


def _alert_picture(
    clean: np.ndarray,
    detections: Detections,
    rows: np.ndarray,
    violators: np.ndarray,
    *,
    thumbnail: bool,
) -> np.ndarray:
    """One size of an alert's picture: faces drawn on a copy of ``clean``, ``rows``
    highlighted, crops of ``violators`` (pixel boxes of ``clean``) beside it."""
    drawn = annotate(
        clean, detections, bgr=True, highlight=rows, labelled=rows if thumbnail else None
    )
    return crops_beside(drawn, clean, violators, share=PANEL_SHARE, bgr=True)


def render_alert(
    frame: FrameEntry,
    detections: Detections,
    violators: Sequence[Box],
    *,
    max_side: int = SNAPSHOT_MAX_SIDE,
    on_reject: RejectObserver | None = None,
) -> AlertPictures | None:
    """The snapshot and thumbnail of an alert (see the module docstring); None when the
    frame does not decode or is not the size its entry declares (see :func:`decode_bgr`).

    ``violators`` are the pixel boxes (of the frame's declared size) of the people the
    alert names, e.g. ``[alert.box]``: each face of ``detections`` with one of these boxes
    is drawn in the highlight colour, and each box gets a crop beside the frame.
    """
    clean = decode_bgr(frame, max_side, on_reject=on_reject)
    if clean is None:
        return None
    rows = detections.index_of(violators, frame.width, frame.height)
    rows = rows[rows >= 0]
    boxes = np.asarray(violators, dtype=np.float64).reshape(-1, 4)

    def scaled(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scale = np.array([width / frame.width, height / frame.height] * 2)
        return np.rint(boxes * scale).astype(np.int64)

    image = _alert_picture(clean, detections, rows, scaled(clean), thumbnail=False)
    height, width = clean.shape[:2]
    thumb_w = max(1, round(THUMB_WIDTH / (1 + PANEL_SHARE)) if len(boxes) else THUMB_WIDTH)
    thumb_h = max(1, round(height * thumb_w / width))
    small = cv2.resize(clean, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
    thumbnail = _alert_picture(small, detections, rows, scaled(small), thumbnail=True)
    return AlertPictures(image, thumbnail)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class SavedSnapshot:
    """Paths of a saved snapshot, relative to the snapshot directory."""

    image: str
    thumbnail: str
    frame: str | None = None
    """The clean frame (None: not kept)."""


class SnapshotStore:
    """Snapshot files with retention by age and total size."""

    def __init__(
        self, directory: str | Path, *, quality: int = 85, max_age: float, max_bytes: int
    ) -> None:
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quality = quality
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def save(
        self,
        alert_id: str,
        ts: float,
        image: np.ndarray,
        *,
        thumbnail: np.ndarray | None = None,
        frame: FrameEntry | None = None,
    ) -> SavedSnapshot:
        """Write the snapshot, its thumbnail (None: ``image`` scaled to
        :data:`THUMB_WIDTH`) and, given the alert's ``frame``, its bytes as they came (the
        clean frame); returns their relative paths."""
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        folder = self.dir / day
        folder.mkdir(parents=True, exist_ok=True)
        if thumbnail is None:
            height, width = image.shape[:2]
            thumb_h = max(1, round(height * THUMB_WIDTH / width))
            thumbnail = cv2.resize(image, (THUMB_WIDTH, thumb_h), interpolation=cv2.INTER_AREA)
        kept = None
        if frame is not None:
            kept = f"{day}/{alert_id}{FRAME_SUFFIX[frame.encoding]}"
            _write_atomic(self.dir / kept, frame.data)
        _write_atomic(folder / f"{alert_id}.jpg", encode_jpeg(image, self.quality))
        _write_atomic(folder / f"{alert_id}.thumb.jpg", encode_jpeg(thumbnail, 80))
        return SavedSnapshot(f"{day}/{alert_id}.jpg", f"{day}/{alert_id}.thumb.jpg", kept)

    def path(self, relative: str | None) -> Path | None:
        """Absolute path of a stored snapshot; None when absent (never saved or deleted)."""
        if not relative:
            return None
        path = (self.dir / relative).resolve()
        if self.dir not in path.parents or not path.is_file():
            return None
        return path

    def files(self) -> list[tuple[float, int, Path]]:
        """Every picture (snapshot, thumbnail, clean frame) as ``(mtime, size, path)``,
        oldest first."""
        out = []
        for folder in self.dir.iterdir():
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file() and entry.name.endswith(PICTURE_SUFFIXES):
                    st = entry.stat()
                    out.append((st.st_mtime, st.st_size, Path(entry.path)))
        out.sort()
        return out

    def enforce_retention(self, now: float | None = None) -> dict[str, int]:
        """Delete by age, then by total size (oldest first); returns deletions by reason
        and the bytes left (``"bytes"``)."""
        now = time.time() if now is None else now
        deleted = {"age": 0, "size": 0}
        with self._lock:
            files = self.files()
            kept = []
            for mtime, size, path in files:
                if now - mtime > self.max_age:
                    path.unlink(missing_ok=True)
                    deleted["age"] += 1
                else:
                    kept.append((mtime, size, path))
            total = sum(size for _m, size, _p in kept)
            for _mtime, size, path in kept:
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                deleted["size"] += 1
                total -= size
            for folder in self.dir.iterdir():
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        return {**deleted, "bytes": total}


@dataclass(slots=True)
class _Cached:
    frame_sid: str  # the frame shown ("" with no picture yet)
    jpeg: bytes  # b"": no picture
    rendered: float
    tried_sid: str = ""  # the latest frame that gave no picture: not fetched again


class LatestFrames:
    """Per-camera cache of the latest annotated frame (see the module docstring).

    Bounded: at most ``max_entries`` cameras and ``max_bytes`` of cached JPEG (least
    recently used first out), at most ``max_concurrent`` frames decoded at once.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        min_interval: float = 0.2,
        max_side: int = 960,
        quality: int = 75,
        on_render: Any = None,
        on_reject: RejectObserver | None = None,
        max_entries: int = 256,
        max_bytes: int = 32 * 1024 * 1024,
        max_concurrent: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_concurrent < 1:
            raise ValueError("max_entries, max_bytes and max_concurrent must be >= 1")
        self.client = client
        self.min_interval = min_interval
        self.max_side = max_side
        self.quality = quality
        self.on_render = on_render
        self.on_reject = on_reject
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._bytes = 0
        self._locks = tuple(threading.Lock() for _ in range(LOCK_STRIPES))
        self._guard = threading.Lock()
        self._decodes = threading.BoundedSemaphore(max_concurrent)

    @property
    def cached_bytes(self) -> int:
        """Bytes of JPEG held by the cache."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._cache)

    def _lock(self, camera_id: str) -> threading.Lock:
        return self._locks[zlib.crc32(camera_id.encode()) % LOCK_STRIPES]

    def _lookup(self, camera_id: str) -> _Cached | None:
        with self._guard:
            cached = self._cache.get(camera_id)
            if cached is not None:
                self._cache.move_to_end(camera_id)
            return cached

    def _store(self, camera_id: str, entry: _Cached) -> None:
        with self._guard:
            old = self._cache.pop(camera_id, None)
            if old is not None:
                self._bytes -= len(old.jpeg)
            if len(entry.jpeg) > self.max_bytes:
                return  # larger than the whole budget: served once, not kept
            # (a camera without a picture is an entry of 0 bytes: bounded by max_entries)
            self._cache[camera_id] = entry
            self._bytes += len(entry.jpeg)
            while len(self._cache) > self.max_entries or self._bytes > self.max_bytes:
                _camera, evicted = self._cache.popitem(last=False)
                self._bytes -= len(evicted.jpeg)

    def get(
        self, camera_id: str, latest: Mapping[str, Any] | None, frames_stream: str | None
    ) -> tuple[str, bytes] | None:
        """``(frame sid, JPEG)`` of the camera's latest frame with its boxes, or None.

        ``latest`` is the engine's latest entry of the camera (frame sid, size, dets).
        A frame that cannot be fetched (trimmed), does not decode or is not the size its
        entry declares keeps the previous picture.
        """
        with self._lock(camera_id):
            cached = self._lookup(camera_id)
            now = self.clock()
            if cached and (
                now - cached.rendered < self.min_interval
                or latest is None
                or latest["frame_sid"] in (cached.frame_sid, cached.tried_sid)
            ):
                return (cached.frame_sid, cached.jpeg) if cached.jpeg else None
            if latest is None or frames_stream is None:
                return None
            frame = fetch_frame(self.client, frames_stream, str(latest["frame_sid"]))
            image = None
            if frame is not None:
                with self._decodes:
                    image = render(
                        frame,
                        parse_detections(latest["dets"], int(latest["w"]), int(latest["h"])),
                        max_side=self.max_side,
                        on_reject=self.on_reject,
                        muted=ignored_rows(latest),
                    )
            if image is None:  # trimmed, or rejected (counted once): keep what there was
                sid = str(latest["frame_sid"])
                if cached:
                    cached.rendered, cached.tried_sid = now, sid
                else:
                    self._store(camera_id, _Cached("", b"", now, tried_sid=sid))
                return (cached.frame_sid, cached.jpeg) if cached and cached.jpeg else None
            jpeg = encode_jpeg(image, self.quality)
            del image
            self._store(camera_id, _Cached(str(latest["frame_sid"]), jpeg, now))
            if self.on_render is not None:
                self.on_render()
            return str(latest["frame_sid"]), jpeg
