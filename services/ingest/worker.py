"""An ingest node: cameras -> publisher -> Redis, plus registry, voice prompt, metrics.

Threads: one capture thread per camera, one publisher (the only writer of frames), one
registry heart-beat, optionally one alert reader for the voice prompt, and the metrics
HTTP server. The main thread waits for SIGTERM / SIGINT, then stops the cameras, lets the
publisher flush within ``shutdown_timeout`` seconds, writes the cameras' final status and
returns exit code 0 (70 after a fatal supervisor verdict). It also stops (exit 0) once
every camera has ended - only non-looping files end - and exits 2 when Redis holds a
different stream layout.

Supervision (:class:`~facemask.infra.watchdog.Supervisor`): the publisher, the cameras and
the registry heart-beat are Workers adopted by the supervisor (a dead one is restarted with
back-off; a camera whose file ended may finish), the voice reader is watched. Too many
deaths are a fatal verdict: the node stops and exits 70. Progress watch ``frames``: frames
buffered vs published (a stall is logged, counted and shown, e.g. Redis down with a full
buffer).

Redis unreachable at start is not an error: the node captures into its ring buffer and
publishes once Redis answers (after checking the layout). This module never imports
TensorFlow or gRPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import cv2

from facemask.contracts.registry import last_frame_id
from facemask.contracts.streams import LayoutMismatchError
from facemask.infra.lifecycle import stop_on_signals
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient, connect
from facemask.infra.settings import ConfigError
from facemask.infra.watchdog import EXIT_UNHEALTHY, RestartPolicy, Supervisor
from services.ingest.camera import Camera, SourceFactory, default_source_factory
from services.ingest.config import IngestSettings
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import Publisher
from services.ingest.registry import CameraRegistry
from services.ingest.voice import VoicePrompter, build_command, ensure_default_clip

logger = logging.getLogger(__name__)

CAMERA_JOIN_S = 2.0
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2


def first_frame_ids(
    settings: IngestSettings, client: RedisClient, *, now: float | None = None
) -> dict[str, int]:
    """Seed of each camera's frame ids: ``max(unix ms, registry last_frame_id + 1)``.

    Also checks the stream layout. Redis unreachable: the clock alone (logged);
    :class:`LayoutMismatchError` propagates.
    """
    now_ms = int((time.time() if now is None else now) * 1000)
    seeds = {camera.id: now_ms for camera in settings.cameras}
    try:
        settings.layout.check_meta(client)
        for camera_id, seed in list(seeds.items()):
            last = last_frame_id(client, settings.layout, camera_id)
            if last is not None and last + 1 > seed:
                seeds[camera_id] = last + 1
    except CONNECTION_ERRORS as exc:
        logger.warning(
            "redis unreachable at start; frame ids from the clock, frames buffered",
            extra={"error": str(exc)},
        )
    return seeds


class IngestWorker:
    """The node. ``run()`` for a process; ``start()`` / ``request_stop()`` /
    ``shutdown()`` to drive it from tests."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        metrics: IngestMetrics | None = None,
        source_factory: SourceFactory = default_source_factory,
    ) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.metrics = metrics or IngestMetrics(max_cameras=settings.max_cameras)
        self.client = connect(settings.redis_url)
        self.source_factory = source_factory
        self.metrics_port: int | None = None
        self.cameras: list[Camera] = []
        self.registry: CameraRegistry | None = None
        self.voice: VoicePrompter | None = None
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._started = False
        self.supervisor = Supervisor.from_settings("ingest", settings, self.metrics.supervision)
        self.supervisor.on_fatal(lambda _reason: self._stop.set())
        with self.supervisor.adopting():
            self.publisher = Publisher(
                self.client,
                maxlen=settings.stream_maxlen,
                capacity=settings.buffer_frames,
                metrics=self.metrics,
                batch=settings.publish_batch,
                backoff_initial=settings.redis_backoff_initial,
                backoff_max=settings.redis_backoff_max,
                on_connect=self.layout.check_meta,
                on_fatal=self._on_fatal,
            )

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Check the layout, seed frame ids and start every thread.

        Raises :class:`LayoutMismatchError` (nothing started) when Redis disagrees on the
        layout, :class:`ConfigError` when the metrics port cannot be bound.
        """
        if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        seeds = first_frame_ids(self.settings, self.client)
        s = self.settings
        if s.metrics_port:
            try:
                self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc}"
                ) from None
        camera_policy = RestartPolicy(may_finish=True)  # a file without loop ends
        for config in s.cameras:
            with self.supervisor.adopting(camera_policy):
                camera = Camera(
                    config,
                    layout=self.layout,
                    publisher=self.publisher,
                    metrics=self.metrics,
                    node=s.node_name,
                    first_frame_id=seeds[config.id],
                    backoff_initial=s.source_backoff_initial,
                    backoff_max=s.source_backoff_max,
                    source_factory=self.source_factory,
                    on_status=self._camera_status,
                )
            self.cameras.append(camera)
        with self.supervisor.adopting():
            self.registry = CameraRegistry(
                self.client,
                self.layout,
                self.registry_fields,
                node=s.node_name,
                interval=s.heartbeat_interval,
                ttl=s.camera_ttl,
            )
        self._supervise()
        self.publisher.start()
        self.registry.start()
        for camera in self.cameras:
            camera.start()
        if s.voice_enabled:
            self.voice = self._make_voice()
            if self.voice is not None:
                self.voice.start()
                voice = self.voice
                self.supervisor.watch_thread(
                    "voice", voice._thread.is_alive, stopping=voice._stop.is_set
                )
        self.supervisor.start()
        self._started = True
        logger.info(
            "ingest node started",
            extra={
                "node": s.node_name,
                "cameras": [c.id for c in self.cameras],
                "metrics_port": self.metrics_port,
                "voice": self.voice is not None,
            },
        )

    def _supervise(self) -> None:
        """Progress of the frames (buffered vs published) and Redis as a condition."""
        publisher = self.publisher
        self.supervisor.watch_progress(
            "frames", done=lambda: publisher.published_total, pending=publisher.pending
        )
        self.supervisor.require("redis", lambda: publisher.connected)

    def _make_voice(self) -> VoicePrompter | None:
        s = self.settings
        try:
            wav = ensure_default_clip(s.voice_cache_dir) if not s.voice_wav else s.voice_wav
        except OSError as exc:
            logger.warning("voice prompt disabled: no clip", extra={"error": str(exc)})
            return None
        return VoicePrompter(
            self.client,
            self.layout,
            [c.id for c in s.cameras],
            command=build_command(s.voice_command, wav),
            metrics=self.metrics,
            min_interval=s.voice_min_interval,
            timeout=s.voice_timeout,
            max_age=s.voice_max_age,
        )

    def request_stop(self) -> None:
        """Ask the node to stop (signal handlers call this)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a stop request, a fatal error, every camera ended, or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.wait(0.5):  # a fatal verdict sets _stop (on_fatal)
            if self.cameras and all(c.finished for c in self.cameras):
                logger.info("every camera has ended; stopping")
                return
            if deadline is not None and time.monotonic() >= deadline:
                return

    def shutdown(self) -> int:
        """Stop capture, flush within the deadline, write the final status; exit code."""
        self._stop.set()
        self.supervisor.stop()
        started = time.monotonic()
        for camera in self.cameras:
            camera.stop()
        for camera in self.cameras:
            camera.join(max(0.05, CAMERA_JOIN_S - (time.monotonic() - started)))
        left = self.publisher.close(self.settings.shutdown_timeout)
        if self.voice is not None:
            self.voice.stop()
        if self.registry is not None:
            self.registry.stop(final=self.publisher.connected)
        self.metrics.close()
        self.client.close()
        code = self.exit_code()
        if code == EXIT_UNHEALTHY:
            logger.critical(
                "exiting: the supervisor declared the node unhealthy",
                extra={"reason": self.supervisor.verdict, "exit_code": code},
            )
        logger.info(
            "ingest node stopped",
            extra={
                "exit_code": code,
                "unpublished": left,
                "published": dict(self.publisher.published),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return code

    def exit_code(self) -> int:
        """0, or 2 for a layout mismatch or an unusable setting, 1 for another fatal error,
        70 after a fatal supervisor verdict."""
        if self.fatal is None and self.supervisor.verdict is not None:
            return EXIT_UNHEALTHY
        if self.fatal is None:
            return EXIT_OK
        if isinstance(self.fatal, LayoutMismatchError | ConfigError):
            return EXIT_CONFIG
        return EXIT_FATAL

    def run(self) -> int:
        """Run until SIGTERM / SIGINT (or every camera ended); the process exit code."""
        with stop_on_signals(logger, on_stop=self.request_stop):
            try:
                self.start()
            except (LayoutMismatchError, ConfigError) as exc:
                logger.error("cannot start the ingest node", extra={"error": str(exc)})
                self.fatal = exc
            if self._started:
                self.wait()
            return self.shutdown()

    # -- callbacks ---------------------------------------------------------------------
    def _on_fatal(self, exc: BaseException) -> None:
        self.fatal = exc
        self._stop.set()

    def _camera_status(self, camera: Camera) -> None:
        if self.registry is not None:
            self.registry.poke()

    def registry_fields(self) -> Mapping[str, Mapping[str, str]]:
        """Every camera's registry hash (camera state + what the publisher sent)."""
        out: dict[str, dict[str, str]] = {}
        for camera in self.cameras:
            fields = camera.registry_fields()
            last = self.publisher.last_published.get(camera.id)
            if last is not None:
                fields["last_frame_id"] = str(last)
            fields["frames_published"] = str(self.publisher.published.get(camera.id, 0))
            sent_at = self.publisher.published_at.get(camera.id)
            fields["last_frame_ts"] = f"{sent_at:.3f}" if sent_at is not None else ""
            out[camera.id] = fields
        return out
