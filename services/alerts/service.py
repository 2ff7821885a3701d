"""Assembly and lifecycle of the alert service: its composition root.

:class:`AlertService` builds every collaborator explicitly - store, metrics, snapshots,
engine, hub, camera directory and board, then (at start) the sinks with their outbox
workers and the consumer - and hands the HTTP API exactly what it uses
(:func:`services.alerts.api.create_app`); nothing else reaches into the service.

Threads: the detections consumer, one outbox worker per enabled sink, a maintenance
thread (camera states, compliance gauges and MQTT compliance states every
``maintenance_interval``, outbox depth, snapshot retention and stale cameras
(``camera_retention``) every minute, history pruning every hour), and the
HTTP server (uvicorn, in-process, in its own thread: API, dashboard, SSE, ``/metrics``).

Supervision (:class:`~facemask.infra.watchdog.Supervisor`): the consumer, outbox and
maintenance loops are Workers adopted by the supervisor (restarted when they die, up to
``restart_limit`` times); the HTTP thread cannot be restarted, so its death is fatal. A
fatal verdict makes ``/readyz`` 503 and the process exit 70. Progress watches: detections
read vs committed (``detections``: a poison batch re-read forever is a stall) and, per
sink, due outbox rows vs handled ones (``outbox-<sink>``: reported, not a readiness
matter: a slow sink must not take the dashboard down). ``/readyz`` includes the
supervisor's verdict (``supervisor``).

Start: open the database, connect Redis (unreachable is not fatal: the consumer retries
and ``/readyz`` says not ready; a stream layout that differs from Redis' is fatal), start
the sinks and their workers, restore the engine state, start the consumer, then serve
HTTP. Stop (SIGTERM): stop the consumer after its current batch (committed and
acknowledged), end the SSE streams, stop the HTTP server, let each outbox worker finish
the delivery in progress, close the sinks and the database.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn

from facemask.infra.metrics import MetricsServer, serve_metrics
from facemask.infra.redisconn import CONNECTION_ERRORS, connect
from facemask.infra.watchdog import RestartPolicy, Supervisor
from facemask.infra.worker import Worker
from services.alerts.api import create_app
from services.alerts.cameras import CameraBoard, CameraDirectory, HealthRules
from services.alerts.config import AlertSettings
from services.alerts.consumer import DetectionsConsumer
from services.alerts.engine import AlertEngine
from services.alerts.hub import AlertHub
from services.alerts.metrics import AlertMetrics
from services.alerts.outbox import OutboxWorker
from services.alerts.records import AlertRecord
from services.alerts.sinks import Sink, SinkContext, build_sinks
from services.alerts.snapshots import LatestFrames, SnapshotStore
from services.alerts.store import AlertStore
from services.alerts.zones import ZoneBook

logger = logging.getLogger(__name__)

RETENTION_INTERVAL = 60.0
PRUNE_INTERVAL = 3600.0


class _DropColorMessage(logging.Filter):
    """uvicorn passes a terminal-coloured duplicate of its messages; JSON logs drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


class AlertService:
    """One running alert service."""

    def __init__(self, settings: AlertSettings, metrics: AlertMetrics | None = None) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.metrics = metrics or AlertMetrics(max_cameras=settings.max_cameras)
        self.client = connect(settings.redis_url)
        self.store = AlertStore(settings.state_dir)
        snapshot_dir = settings.snapshot_dir or str(Path(settings.state_dir) / "snapshots")
        self.snapshots = SnapshotStore(
            snapshot_dir,
            quality=settings.snapshot_quality,
            max_age=settings.snapshot_max_age,
            max_bytes=settings.snapshot_max_bytes,
        )
        self.latest_frames = LatestFrames(
            self.client,
            min_interval=settings.latest_min_interval,
            max_side=settings.latest_max_side,
            on_render=self.metrics.latest_renders.inc,
            on_reject=lambda reason: self.metrics.frames_rejected.labels("latest", reason).inc(),
        )
        self.zones = ZoneBook(settings.zones, self.store)
        self.engine = AlertEngine.from_settings(settings, self.zones)
        self.hub = AlertHub()
        self.directory = CameraDirectory(
            self.client, self.layout, self.store, max_cameras=settings.max_cameras
        )
        self.board = CameraBoard(
            self.directory,
            self.engine,
            self.store,
            self.latest_frames,
            self.layout,
            online_window=settings.online_window,
            max_cameras=settings.max_cameras,
            rules=HealthRules(
                analysis_timeout=settings.analysis_timeout,
                frame_timeout=settings.frame_timeout,
                online_window=settings.online_window,
            ),
            retention=settings.camera_retention,
            metrics=self.metrics,
        )
        self.sinks: list[Sink] = []
        self.workers: list[OutboxWorker] = []
        self.consumer: DetectionsConsumer | None = None
        self.port = 0
        self.metrics_port = 0
        self._metrics_server: MetricsServer | None = None
        self.public_base_url = settings.public_base_url
        self.stopped = threading.Event()
        self._server: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self.supervisor = Supervisor.from_settings("alerts", settings, self.metrics.supervision)
        self._maintenance = self.supervisor.adopt(
            Worker.every(
                "maintenance",
                settings.maintenance_interval,
                self.maintain_once,
                immediate=False,
                log=logger,
            )
        )
        self._last_retention = 0.0
        self._last_prune = 0.0

    # -- start / stop ----------------------------------------------------------------

    def start(self) -> None:
        """Start everything; raises :class:`LayoutMismatchError` on a layout conflict."""
        try:
            self.layout.check_meta(self.client)
        except CONNECTION_ERRORS as exc:
            logger.warning(
                "redis unreachable at start; the consumer keeps retrying",
                extra={"error": str(exc)},
            )
        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        if not self.public_base_url:
            host = self.settings.host
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            self.public_base_url = f"http://{host}:{self.port}"
        context = SinkContext(self.client, self.layout, self.public_base_url)
        self.sinks = build_sinks(self.settings, context)
        for sink in self.sinks:
            sink.start()
            with self.supervisor.adopting():
                worker = OutboxWorker(
                    self.store,
                    sink,
                    self.metrics,
                    ttl=self.settings.outbox_ttl,
                    initial=self.settings.retry_initial,
                    cap=self.settings.retry_max,
                )
            self._watch_outbox(worker)
            self.workers.append(worker)
            worker.start()
        with self.supervisor.adopting():
            self.consumer = DetectionsConsumer(
                self.client,
                self.layout,
                self.settings,
                self.engine,
                self.store,
                self.snapshots,
                self.metrics,
                [s.name for s in self.sinks],
                camera_info=self.directory.info,
                on_alerts=self._on_alerts,
                on_entries=self.board.record,
            )
        streams = self.consumer.streams
        # A death mid-batch may leave the engine half-updated: reload the committed state
        # and read this consumer's pending entries first, then restart.
        self.supervisor.set_policy(
            streams.worker, RestartPolicy(before_restart=self.consumer.restore)
        )
        self.supervisor.watch_progress(
            "detections", done=lambda: streams.settled, taken=lambda: streams.taken
        )
        self.consumer.start()
        self._start_http(sock)
        http = self._http_thread
        if http is not None:
            self.supervisor.watch_thread("http", http.is_alive, stopping=self.stopped.is_set)
        self.supervisor.on_ready(
            lambda ready: self.metrics.ready.set(self._ready_now() if ready else 0)
        )
        if self.settings.metrics_port:
            self._metrics_server = serve_metrics(
                self.metrics.registry, self.settings.metrics_port, self.settings.metrics_host
            )
            self.metrics_port = self._metrics_server.port
        self._maintenance.start()
        self.supervisor.start()
        logger.info(
            "alert service started",
            extra={
                "port": self.port,
                "state_dir": str(self.store.dir),
                "sinks": [s.name for s in self.sinks],
                "consumer": self.settings.consumer_name,
                "auth": bool(self.settings.api_token),
            },
        )

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    def _start_http(self, sock: socket.socket) -> None:
        app = create_app(
            self.settings,
            store=self.store,
            snapshots=self.snapshots,
            cameras=self.board,
            hub=self.hub,
            registry=self.metrics.registry,
            readiness=self.readiness,
            zones=self.zones,
        )
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).addFilter(_DropColorMessage())
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._http_thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._http_thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started and time.monotonic() < deadline:
            if not self._http_thread.is_alive():
                raise RuntimeError("the HTTP server failed to start")
            time.sleep(0.02)

    def stop(self) -> bool:
        """Graceful stop; True when the consumer finished its batch in time."""
        timeout = self.settings.shutdown_timeout
        clean = True
        self.supervisor.stop()
        if self.consumer is not None:
            clean = self.consumer.stop(timeout)
        self.stopped.set()
        self.hub.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout)
        for worker in self.workers:
            worker.stop(timeout)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("closing sink failed", extra={"sink": sink.name})
        self._maintenance.stop(2.0)
        if self._metrics_server is not None:
            self._metrics_server.close()
        self.store.close()
        self.client.close()
        logger.info("alert service stopped", extra={"clean": clean})
        return clean

    # -- events ----------------------------------------------------------------------

    def _on_alerts(self, alerts: list[AlertRecord]) -> None:
        for worker in self.workers:
            worker.wake()
        for alert in alerts:
            self.hub.publish(alert)

    # -- status ----------------------------------------------------------------------

    def redis_ok(self) -> bool:
        """Whether Redis answers PING now."""
        try:
            return bool(self.client.ping())
        except Exception:  # connection errors and anything else: not ready
            return False

    def readiness(self) -> dict[str, bool]:
        """The checks behind ``/readyz`` (``supervisor``: no fatal verdict, every loop
        running, the detections making progress)."""
        return {
            "redis": self.redis_ok(),
            "consumer": bool(self.consumer and self.consumer.running()),
            "http": bool(self._server and self._server.started),
            "supervisor": self.supervisor.ready,
        }

    def _ready_now(self) -> int:
        return 1 if all(self.readiness().values()) else 0

    def _watch_outbox(self, worker: OutboxWorker) -> None:
        """Rows due for the worker's sink vs rows it handled (any outcome)."""
        sink = worker.name

        def due() -> int:
            when = self.store.next_due(sink)
            return 1 if when is not None and when <= time.time() else 0

        self.supervisor.watch_progress(
            f"outbox-{sink}", done=lambda: worker.handled, pending=due, readiness=False
        )

    # -- maintenance -----------------------------------------------------------------

    def maintain_once(self, now: float | None = None) -> None:
        """Update gauges, camera states and compliance states; run retention when due."""
        now = self.board.clock() if now is None else now
        self.metrics.ready.set(self._ready_now())  # first: a Redis error below cannot skip it
        for cam in self.board.cameras(now):
            if cam["compliance"] is None:
                with contextlib.suppress(KeyError):
                    self.metrics.compliance.remove(cam["id"])
            else:
                self.metrics.compliance.labels(cam["id"]).set(cam["compliance"])
            state = {
                "camera_id": cam["id"],
                "online": cam["online"],
                "status": cam["status"],
                "state": cam["state"],
                "compliance": cam["compliance"],
                "masked": cam["masked"],
                "faces": cam["faces"],
                "window_s": cam["window_s"],
            }
            for sink in self.sinks:
                sink.publish_compliance(cam["id"], state)
        depth = self.store.outbox_depth()
        for sink in self.sinks:
            self.metrics.outbox_depth.labels(sink.name).set(depth.get(sink.name, 0))
        self.metrics.sse_clients.set(self.hub.count())
        if now - self._last_retention >= RETENTION_INTERVAL:
            self._last_retention = now
            result = self.snapshots.enforce_retention(now)
            for reason in ("age", "size"):
                if result[reason]:
                    self.metrics.snapshots_deleted.labels(reason).inc(result[reason])
            self.metrics.snapshot_bytes.set(result["bytes"])
            self.board.expire(now)  # cameras offline beyond camera_retention (logged, counted)
        if now - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = now
            pruned = self.store.prune_alerts(now - self.settings.history_days * 86400)
            if pruned:
                logger.info("old alerts pruned", extra={"alerts": len(pruned)})
