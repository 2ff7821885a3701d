"""Helpers of the alert service tests: settings with short delays, a recording HTTP server
standing in for webhooks and Slack, a feeder of real frame + detections entries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.core.types import LABEL_IDS, Detections
from facemask.dev.localredis import free_port
from services.alerts.config import AlertSettings
from services.alerts.metrics import AlertMetrics
from services.alerts.service import AlertService
from tests.fixtures.paths import SHARED_DIR, require

LAYOUT = StreamLayout()
GROUP = "alerts"
SAMPLE = SHARED_DIR / "data" / "samples" / "demo2.jpg"
VIDEO = SHARED_DIR / "data" / "video" / "group4_masks.mp4"


def fast_settings(redis_url: str, state_dir: Path, **overrides: Any) -> AlertSettings:
    """Settings for tests: loopback, free port, short delays, text logs."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "state_dir": str(state_dir),
        "host": "127.0.0.1",
        "port": 0,
        "consumer_name": "alerts-test",
        "read_block": 0.1,
        "claim_interval": 1.0,
        "retry_initial": 0.2,
        "retry_max": 1.0,
        "maintenance_interval": 0.2,
        "latest_min_interval": 0.1,
        "shutdown_timeout": 5.0,
        "log_format": "text",
    }
    values.update(overrides)
    return AlertSettings(**values)


@contextmanager
def running(settings: AlertSettings) -> Iterator[AlertService]:
    """A started in-process service, stopped (cleanly) afterwards."""
    service = AlertService(settings, AlertMetrics())
    service.start()
    try:
        yield service
    finally:
        assert service.stop()


def drained(client: redis.Redis, layout: StreamLayout = LAYOUT, group: str = GROUP) -> bool:
    """True when the group has read and acknowledged every detections entry."""
    for key in layout.all_detections():
        if not client.exists(key):
            continue
        for info in client.xinfo_groups(key):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name != group:
                continue
            if int(info.get("pending") or 0) or int(info.get("lag") or 0):
                return False
    return True


def metric(service: AlertService, name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a sample of the service's registry (0 when absent)."""
    value = service.metrics.registry.get_sample_value(name, labels or {})
    return float(value or 0.0)


# -- a recording HTTP endpoint ---------------------------------------------------------------


@dataclass
class Request:
    """One request the hook server received."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HookServer:
    """A local HTTP server standing in for a webhook receiver or Slack.

    ``status`` is the answer to every POST; ``down()`` closes the listening socket
    (connection refused) and ``up()`` listens again on the same port.
    """

    port: int = field(default_factory=free_port)
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> HookServer:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with hook._lock:
                    hook.requests.append(Request(self.path, dict(self.headers.items()), body))
                    status = hook.status
                payload = b"ok" if status < 400 else b"unavailable"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]


@pytest.fixture()
def hooks() -> Iterator[HookServer]:
    """A recording HTTP server (webhook at /hook, Slack at /slack)."""
    server = HookServer().up()
    try:
        yield server
    finally:
        server.down()


# -- feeding real frames and detections ------------------------------------------------------


@pytest.fixture(scope="session")
def sample_jpeg() -> tuple[bytes, int, int]:
    """A real JPEG (the shared sample, else a synthetic picture) and its size."""
    if SAMPLE.is_file():
        data = SAMPLE.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return data, image.shape[1], image.shape[0]
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (330, 464, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes(), 464, 330


Face = tuple[str, float, tuple[int, int, int, int]]


class Feeder:
    """Writes frames (ingest's format) and their detections entries (inference's format)."""

    def __init__(
        self,
        client: redis.Redis,
        camera_id: str,
        jpeg: tuple[bytes, int, int],
        *,
        fps: float = 5.0,
        start_ts: float | None = None,
        layout: StreamLayout = LAYOUT,
    ) -> None:
        self.client = client
        self.camera_id = camera_id
        self.data, self.width, self.height = jpeg
        self.fps = fps
        self.layout = layout
        self.ts = time.time() if start_ts is None else start_ts
        self.frame_id = int(self.ts * 1000)
        self.entries: list[tuple[str, DetectionsEntry]] = []

    def frame(
        self, faces: list[Face], *, data: bytes | None = None, keep_frame: bool = True
    ) -> tuple[str, DetectionsEntry]:
        """Publish one frame and its detections entry; returns (detections sid, entry)."""
        frames_key = self.layout.frames_for(self.camera_id)
        frame = FrameEntry(
            self.camera_id,
            self.frame_id,
            self.ts,
            "jpeg",
            self.width,
            self.height,
            data or self.data,
            node="test-node",
        )
        frame_sid = self.client.xadd(frames_key, frame.to_fields()).decode()  # type: ignore[arg-type]
        if not keep_frame:
            self.client.xdel(frames_key, frame_sid)
        entry = DetectionsEntry(
            camera_id=self.camera_id,
            frame_id=self.frame_id,
            frame_sid=frame_sid,
            capture_ts=self.ts,
            done_ts=self.ts + 0.05,
            width=self.width,
            height=self.height,
            model="test",
            detections=faces_of(faces, self.width, self.height),
        )
        sid = self.publish(entry)
        self.frame_id += 1
        self.ts += 1.0 / self.fps
        return sid, entry

    def publish(self, entry: DetectionsEntry) -> str:
        """XADD a detections entry to the camera's partition."""
        key = self.layout.detections(self.layout.partition_of(entry.camera_id))
        sid = self.client.xadd(key, entry.to_fields()).decode()  # type: ignore[arg-type]
        self.entries.append((sid, entry))
        return sid

    def frames(self, count: int, faces: list[Face]) -> list[tuple[str, DetectionsEntry]]:
        return [self.frame(faces) for _ in range(count)]


def register_camera(
    client: redis.Redis,
    camera_id: str,
    *,
    name: str = "",
    location: str = "",
    ttl: int = 60,
    status: str = "up",
    fps: float = 5.0,
    layout: StreamLayout = LAYOUT,
) -> None:
    """Write the camera's registry hash as an ingest node does."""
    key = layout.camera(camera_id)
    client.hset(
        key,
        mapping={
            "id": camera_id,
            "name": name or camera_id,
            "location": location,
            "status": status,
            "fps": str(fps),
            "last_seen": f"{time.time():.3f}",
            "node": "test-node",
            "resolution": "464x330",
        },
    )
    client.expire(key, ttl)
    client.sadd(layout.cameras, camera_id)


# Faces in the 464x330 sample picture (boxes for tests, not the picture's real faces).
PERSON_A = (40, 40, 110, 120)
PERSON_B = (180, 50, 250, 130)
PERSON_C = (320, 60, 390, 140)


def masked(box: tuple[int, int, int, int], score: float = 0.95) -> Face:
    return ("mask", score, box)


def bare(box: tuple[int, int, int, int], score: float = 0.95) -> Face:
    return ("no_mask", score, box)


# -- the sample clip through the real detector ------------------------------------------------


@dataclass(frozen=True)
class ClipFrame:
    """One frame of the sample clip as the pipeline sees it."""

    index: int  # frame index in the video
    t: float  # video time (s): its capture time is the playback start + t
    jpeg: bytes  # as ingest publishes it
    width: int
    height: int
    detections: Detections  # what the inference service finds in it


@dataclass(frozen=True)
class Clip:
    """The clip's frames kept by ingest at its default rate, each with its detections."""

    frames: list[ClipFrame]
    model: str

    def entries(self, camera_id: str, start: float) -> list[DetectionsEntry]:
        """Its detections entries for ``camera_id``, played from capture time ``start``."""
        return [
            DetectionsEntry(
                camera_id=camera_id,
                frame_id=i,
                frame_sid=f"{int((start + f.t) * 1000)}-{i}",
                capture_ts=start + f.t,
                done_ts=start + f.t + 0.05,
                width=f.width,
                height=f.height,
                model=self.model,
                detections=f.detections,
            )
            for i, f in enumerate(self.frames)
        ]


@pytest.fixture(scope="session")
def group4_clip(detector: Any) -> Clip:
    """``group4_masks.mp4`` sampled as an ingest node samples a file at its default rate
    (its :class:`~services.ingest.sources.FileSource`, ``DEFAULT_FPS``), JPEG-encoded at
    ingest's default quality, decoded and run through the detector as the inference
    service does (its decode options, the session's TensorFlow detector: conf 0.5,
    IoU 0.4). Computed once per test session (a few seconds)."""
    from facemask.core.preprocess import decode_image
    from services.inference.batcher import decode_options
    from services.ingest.camera import encode_jpeg
    from services.ingest.config import DEFAULT_FPS, DEFAULT_QUALITY
    from services.ingest.sources import FileSource, SourceEnded, parse_source

    require(VIDEO)
    source = FileSource(parse_source(str(VIDEO)), DEFAULT_FPS, realtime=False)
    source.open()
    reduce, min_size = decode_options(None, "auto")
    stop = threading.Event()
    frames: list[ClipFrame] = []
    index = -1
    try:
        while True:
            try:
                captured = source.read(stop)
            except SourceEnded:
                break
            assert captured is not None
            index += source.take_skipped() + 1  # the frames the rate cap dropped, then this
            jpeg = encode_jpeg(captured.image, DEFAULT_QUALITY)
            image = decode_image(jpeg, reduce=reduce, min_size=min_size)
            (found,) = detector.detect([image.rgb])
            t = index / source.source_fps
            frames.append(ClipFrame(index, t, jpeg, image.width, image.height, found))
    finally:
        source.close()
    return Clip(frames, str(detector.model_version))


# Who is where in the clip (960 x 506): box centres at its start, in pixels.
GROUP4_PEOPLE = {
    "left man": (262, 208),  # takes his mask off again from ~5.4 s to ~9.4 s
    "front": (455, 332),
    "right": (580, 246),
    "far right": (746, 280),
    "poster": (485, 125),  # the Mona Lisa print on the wall: a no_mask face all along
}
POSTER_MASK = [[0.47, 0.18], [0.54, 0.18], [0.54, 0.3], [0.47, 0.3]]
"""An ignore mask over the poster (frame-relative)."""
MASK_OFF = (5.4, 9.6)
"""Video time (s) in which the left man is unmasked again."""


def who(box: Sequence[int]) -> str:
    """The person (or the poster) of the clip whose place a face box is at."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    name, (px, py) = min(
        GROUP4_PEOPLE.items(), key=lambda kv: (kv[1][0] - x) ** 2 + (kv[1][1] - y) ** 2
    )
    return name if (px - x) ** 2 + (py - y) ** 2 <= 45**2 else f"nobody at {list(box)}"


def expected_alerts(poster: bool) -> list[str]:
    """The alerts of the clip with the default settings, in order of the people's names:
    everyone unmasked at the start (the poster unless masked), then the mask-off moment."""
    start = ["far right", "front", "left man", "right"] + (["poster"] if poster else [])
    return [*sorted(start), "left man (mask off)"]


def describe_alerts(alerts: Sequence[tuple[float, Sequence[int]]]) -> list[str]:
    """``(video time, box)`` of alerts -> names as :func:`expected_alerts` gives them."""
    start = sorted(who(box) for t, box in alerts if t < MASK_OFF[0])
    later = [
        f"{who(box)} (mask off)" if MASK_OFF[0] <= t <= MASK_OFF[1] else f"{who(box)} at {t}"
        for t, box in sorted(alerts)
        if t >= MASK_OFF[0]
    ]
    return start + later


def feed_clip(
    client: redis.Redis, camera_id: str, clip: Clip, start: float
) -> list[DetectionsEntry]:
    """Publish the clip's frames and detections entries, played from ``start``."""
    first = clip.frames[0]
    feed = Feeder(client, camera_id, (first.jpeg, first.width, first.height), start_ts=start)
    out = []
    for frame in clip.frames:
        feed.ts = start + frame.t
        faces = list(
            zip(
                frame.detections.labels,
                frame.detections.scores.tolist(),
                [tuple(b) for b in frame.detections.pixels(frame.width, frame.height).tolist()],
                strict=True,
            )
        )
        out.append(feed.frame(faces, data=frame.jpeg)[1])  # type: ignore[arg-type]
    return out


Face = tuple[str, float, tuple[int, int, int, int]]


def faces_of(faces: Sequence[Face], width: int, height: int) -> Detections:
    """``(label, score, pixel box)`` rows as the :class:`Detections` of a frame."""
    if not faces:
        return Detections.empty()
    return Detections.from_pixels(
        [box for _, _, box in faces],
        [score for _, score, _ in faces],
        [LABEL_IDS[label] for label, _, _ in faces],
        width,
        height,
    )
