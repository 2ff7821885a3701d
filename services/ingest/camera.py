"""The capture loop of one camera, in its own thread.

open the source -> read kept frames (rate cap at the source) -> resize -> JPEG -> frame id
-> :meth:`Publisher.put`. A source that cannot be opened or stops delivering is closed and
opened again after a capped exponential backoff (reset once frames flow again); the
camera's status (``starting``, ``up``, ``reconnecting``, ``ended``, ``stopped``) and last
error go to the registry, and ``facemask_ingest_camera_up`` follows it. A non-looping file
that reaches its end ends the camera (status ``ended``).

Frame ids: the worker seeds each camera with ``max(now in unix milliseconds, last_frame_id
in the registry + 1)`` and the camera adds 1 per captured frame. A camera keeps at most 60
fps < 1000 ids per second, so ids stay below the clock and the next process (even after
the registry entry expired) starts above them; the registry value covers a clock that went
backwards (a Raspberry Pi without RTC before NTP sync) while the entry is alive. Ids of
frames dropped before Redis leave gaps: ids increase, they are not contiguous.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import cv2
import numpy as np

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import MAX_FRAME_BYTES, FrameEntry
from facemask.infra.backoff import Backoff
from facemask.infra.worker import Worker
from services.ingest.config import CameraConfig
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import OutgoingFrame, Publisher
from services.ingest.sources import (
    Captured,
    FrameSource,
    SourceEnded,
    SourceError,
    SourceSpec,
    open_source,
)

logger = logging.getLogger(__name__)

SourceFactory = Callable[[CameraConfig], FrameSource]
FPS_WINDOW_S = 2.0


def default_source_factory(camera: CameraConfig) -> FrameSource:
    """The OpenCV source of a camera's config."""
    return open_source(camera.spec, camera.fps, loop=camera.loops, realtime=camera.realtime)


def resize_to_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Scale ``image`` down so its longer side is ``max_side`` (never up; 0: unchanged)."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR (or grey) image; raises ValueError when OpenCV fails."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()


class Camera:
    """One camera: config, state for the registry, and the capture thread."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        layout: StreamLayout,
        publisher: Publisher,
        metrics: IngestMetrics,
        node: str,
        first_frame_id: int,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        source_factory: SourceFactory = default_source_factory,
        on_status: Callable[[Camera], None] | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.spec: SourceSpec = config.spec
        self.stream = layout.frames_for(config.id)
        self.partition = layout.partition_of(config.id)
        self.publisher = publisher
        self.metrics = metrics
        self.node = node
        self.next_frame_id = first_frame_id
        self.status = "starting"
        self.last_error = ""
        self.failures = 0
        self.width = 0
        self.height = 0
        self.started = time.time()
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._source_factory = source_factory
        self._on_status = on_status
        self._worker = Worker(f"camera-{config.id}", self._run)
        self._stop = self._worker.stop_event
        self._fps_count = 0
        self._fps_since = time.monotonic()
        metrics.add_camera(config.id)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start capturing."""
        self._worker.start()

    def stop(self) -> None:
        """Ask the capture loop to stop (returns at once)."""
        self._worker.request_stop()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; True when it has ended."""
        return self._worker.join(timeout)

    @property
    def finished(self) -> bool:
        """True once the thread has ended normally (stopped, or a non-looping file ended);
        a loop that died (see ``failed``) is not finished: the supervisor restarts it or
        declares the node unhealthy."""
        w = self._worker
        return w.started and not w.alive and not w.failed

    @property
    def failed(self) -> bool:
        """True when the capture loop died of an unexpected exception (it is logged)."""
        return self._worker.failed

    # -- state -------------------------------------------------------------------------
    def _set_status(self, status: str, error: str = "") -> None:
        changed = status != self.status or (error and error != self.last_error)
        self.status = status
        if error:
            self.last_error = error
        self.metrics.camera_up.labels(self.id).set(1 if status == "up" else 0)
        if status != "up":
            self.metrics.capture_fps.labels(self.id).set(0)
        elif changed:
            self._fps_count = 0
            self._fps_since = time.monotonic()
        if changed and self._on_status is not None:
            self._on_status(self)

    def registry_fields(self) -> dict[str, str]:
        """The camera's registration (see :mod:`facemask.contracts.registry`)."""
        cfg = self.config
        return {
            "id": cfg.id,
            "name": cfg.display_name,
            "location": cfg.location,
            "source_kind": self.spec.kind,
            "source": self.spec.redacted,
            "fps": f"{cfg.fps:g}",
            "width": str(self.width),
            "height": str(self.height),
            "resolution": f"{self.width}x{self.height}" if self.width else "",
            "quality": str(cfg.quality),
            "status": self.status,
            "last_error": self.last_error,
            "failures": str(self.failures),
            "stream": self.stream,
            "partition": str(self.partition),
            "started": f"{self.started:.3f}",
        }

    # -- capture loop ------------------------------------------------------------------
    def _run(self, _worker: Worker) -> None:
        log = {"camera_id": self.id, "source": self.spec.redacted}
        while not self._stop.is_set():
            source = self._source_factory(self.config)
            try:
                source.open()
                self._set_status("up")
                logger.info("camera source opened", extra={**log, "kind": self.spec.kind})
                while True:
                    captured = source.read(self._stop)
                    skipped = source.take_skipped()
                    if skipped:
                        self.metrics.frames_dropped.labels(self.id, "rate_cap").inc(skipped)
                    if captured is None:
                        break
                    self._backoff.reset()
                    self._process(captured)
            except SourceEnded:
                logger.info("camera source ended (no loop)", extra=log)
                self._set_status("ended")
                return
            except Exception as exc:
                expected = isinstance(exc, SourceError)
                self.failures += 1
                self.metrics.source_errors.labels(self.id).inc()
                delay = self._backoff.next()
                self._set_status("reconnecting", str(exc) or type(exc).__name__)
                logger.warning(
                    "camera source failed; retrying",
                    exc_info=not expected,
                    extra={**log, "error": str(exc), "retry_in_s": round(delay, 2)},
                )
                self._stop.wait(delay)
            finally:
                source.close()
        self._set_status("stopped")

    def _process(self, captured: Captured) -> None:
        self.metrics.frames_captured.labels(self.id).inc()
        self._count_fps()
        started = time.perf_counter()
        try:
            image = resize_to_max_side(captured.image, self.config.max_side)
            data = encode_jpeg(image, self.config.quality)
        except (cv2.error, ValueError) as exc:
            self.metrics.frames_dropped.labels(self.id, "encode_error").inc()
            logger.warning("frame encoding failed", extra={"camera_id": self.id, "error": str(exc)})
            return
        self.metrics.encode_seconds.labels(self.id).observe(time.perf_counter() - started)
        if len(data) > MAX_FRAME_BYTES:
            self.metrics.frames_dropped.labels(self.id, "too_large").inc()
            return
        height, width = image.shape[:2]
        self.width, self.height = width, height
        frame_id = self.next_frame_id
        self.next_frame_id += 1
        entry = FrameEntry(
            camera_id=self.id,
            frame_id=frame_id,
            capture_ts=captured.ts,
            encoding="jpeg",
            width=width,
            height=height,
            data=data,
            node=self.node,
        )
        self.publisher.put(
            OutgoingFrame(self.id, self.stream, frame_id, entry.to_fields(), len(data))
        )

    def _count_fps(self) -> None:
        self._fps_count += 1
        now = time.monotonic()
        elapsed = now - self._fps_since
        if elapsed >= FPS_WINDOW_S:
            self.metrics.capture_fps.labels(self.id).set(self._fps_count / elapsed)
            self._fps_count = 0
            self._fps_since = now
