"""Assembly and lifecycle of the inference service.

Start: bind gRPC (health NOT_SERVING) and metrics first, so probes get answers at once;
load the model, warm it up at the batch sizes it will see, then start the stream consumer
and flip health to SERVING. Stop (SIGTERM): NOT_SERVING, stop reading frames, let
in-flight RPCs finish, drain the batcher, publish and acknowledge every frame already
processed, then exit.

Model: the version promoted for the cluster in Redis, else the ``model`` setting
(:mod:`services.inference.models`). The ``model-watcher`` loop follows promotions and
rollbacks: it loads and warms the new version beside the running one and the batcher swaps
it in between two batches; a version that cannot be made ready leaves the running one
serving (health stays SERVING; ``GetModelInfo`` says which version runs and why the wanted
one does not, ``facemask_model_load_failures_total`` counts it).

Supervision (:class:`~facemask.infra.watchdog.Supervisor`): every background loop (stream
reader, publisher, lag monitor, model watcher: adopted as they are built; the batcher's
model thread: watched) is restarted when it dies, up to ``restart_limit`` times, else the verdict is
fatal (NOT_SERVING, ``facemask_inference_ready`` 0, the process exits 70). Two progress
watches (``stream``: frames taken vs settled with the in-flight ones pending; ``batcher``:
jobs admitted vs resolved) flag a stall after ``stall_timeout`` seconds. Health SERVING and
the ready gauge follow :attr:`Supervisor.ready`: model warm, every loop alive, no stall
and, with streams, the consumer groups in place (Redis reachable).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry

from facemask.infra.metrics import MetricsServer, serve_metrics
from facemask.infra.redisconn import RedisClient, connect
from facemask.infra.watchdog import Supervisor
from facemask.model.detector import Detector
from facemask.model.registry import ModelRegistry
from facemask.v1 import detector_pb2
from services.inference.batcher import DynamicBatcher
from services.inference.config import InferenceSettings
from services.inference.consumer import StreamConsumer
from services.inference.metrics import InferenceMetrics
from services.inference.models import (
    LoadedModel,
    ModelLoader,
    ModelStatus,
    ModelWatcher,
    warmup_sizes,
)
from services.inference.server import DetectorServicer, GrpcServer

__all__ = ["InferenceService", "warmup_sizes"]

logger = logging.getLogger(__name__)


GROUPS_WAIT_S = 2.0
"""How long a start waits for the stream reader's consumer groups before reporting."""


class InferenceService:
    """One running inference service (gRPC + streams + metrics)."""

    def __init__(
        self,
        settings: InferenceSettings,
        detector: Detector | None = None,
        *,
        model_registry: ModelRegistry | None = None,
    ) -> None:
        """``detector``: run this one (the caller's: never closed here) as the ``model``
        setting's version, instead of loading it. ``model_registry``: the local model
        store (default: :class:`ModelRegistry`'s default root)."""
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = InferenceMetrics(self.registry, max_cameras=settings.max_cameras)
        self.servicer = DetectorServicer(self.metrics, settings)
        self.grpc = GrpcServer(settings, self.servicer)
        self.detector = detector
        self.model_registry = model_registry
        self.model: LoadedModel | None = None
        """The model running now (its version is in every result)."""
        self.watcher: ModelWatcher | None = None
        self.batcher: DynamicBatcher | None = None
        self.consumer: StreamConsumer | None = None
        self.metrics_port = 0
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._metrics_server: MetricsServer | None = None
        self.supervisor = Supervisor.from_settings("inference", settings, self.metrics.supervision)
        self._jobs_resolved = 0
        self._stopping = False

    @property
    def model_version(self) -> str:
        """The version of the model running now (as in every result it publishes)."""
        return self.model.version if self.model is not None else ""

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        return self.grpc.port

    def _start_metrics(self) -> None:
        port = self.settings.metrics_port
        if port:
            self._metrics_server = serve_metrics(self.registry, port, self.settings.metrics_host)
            self.metrics_port = port

    def _load_model(self, client: RedisClient | None) -> LoadedModel:
        """The model to start with, warm: the promoted version (when followed, and it
        loads), else the ``model`` setting's; the watcher is built here when followed."""
        start = time.monotonic()
        settings = self.settings
        loader = ModelLoader(settings, self.model_registry or ModelRegistry())
        given = None
        if self.detector is not None:
            given = LoadedModel(self.detector, settings.model, owned=False)
        if client is not None:
            with self.supervisor.adopting():  # its loop: restarted when it dies
                self.watcher = ModelWatcher(
                    client=client,
                    layout=settings.layout,
                    loader=loader,
                    configured=settings.model if given else loader.resolve(settings.model),
                    poll_interval=settings.model_poll_interval,
                    retry_interval=settings.model_retry_interval,
                    on_change=self._model_changed,
                    on_failure=lambda reason: self.metrics.model_load_failures.labels(reason).inc(),
                )
            loaded = self.watcher.initial(given)
        elif given is not None:
            loaded = given
        else:
            loaded = loader.prepare(loader.resolve(settings.model))
        if not loaded.owned:  # the caller's detector: prepare() did not warm it
            loader.warm(loaded.detector)
        detector = loaded.detector
        logger.info(
            "model ready",
            extra={
                "version": loaded.version,
                "variant": loaded.variant,
                "runtime": detector.runtime.name,
                "precision": detector.precision,
                "seconds": round(time.monotonic() - start, 2),
            },
        )
        return loaded

    def _model_info(self, loaded: LoadedModel, status: ModelStatus) -> detector_pb2.ModelInfo:
        detector = loaded.detector
        return detector_pb2.ModelInfo(
            name=detector.model_name,
            version=loaded.version,
            runtime=detector.runtime.name,
            input_width=detector.runtime.input_size[0],
            input_height=detector.runtime.input_size[1],
            max_batch_size=self.batcher.max_batch_size if self.batcher else 0,
            sha256=detector.model_sha256,
            precision=detector.precision,
            variant=loaded.variant,
            wanted_version=status.wanted or loaded.version,
            load_error=status.error,
        )

    def _export_model(self, loaded: LoadedModel) -> None:
        """``facemask_model_info`` and the variant gauges: the running model's series only."""
        detector = loaded.detector
        for gauge in (
            self.metrics.model_info,
            self.metrics.model_variant_info,
            self.metrics.model_variant_rate,
        ):
            gauge.clear()
        self.metrics.model_info.labels(
            detector.model_name,
            loaded.version,
            detector.runtime.name,
            detector.precision,
            loaded.variant,
        ).set(1)
        self._export_variant(detector)

    def _model_changed(self, loaded: LoadedModel, status: ModelStatus) -> None:
        """The watcher swapped a model in, or failed to: follow it in the metrics and
        ``GetModelInfo``."""
        if self.model is not loaded:
            self.model, self.detector = loaded, loaded.detector
            self._export_model(loaded)
        self.servicer.model_info = self._model_info(loaded, status)

    def _export_variant(self, detector: Detector) -> None:
        """The variant in use and, when the auto runtime chose it, the rates it measured."""
        selection = getattr(detector.runtime, "selection", None)
        chosen_by = "explicit"
        fields: dict[str, Any] = {"runtime": detector.runtime.name, "precision": detector.precision}
        if selection is not None:
            chosen_by = "cache" if selection.cached else "measured"
            fields.update(selection.log_fields())
            for measured in selection.measurements:
                self.metrics.model_variant_rate.labels(measured.variant.key).set(
                    measured.images_per_second
                )
        self.metrics.model_variant_info.labels(
            detector.runtime.name, detector.precision, chosen_by
        ).set(1)
        logger.info("model variant", extra={**fields, "chosen_by": chosen_by})

    def start(self) -> None:
        """Start everything; returns once the service is SERVING."""
        self.grpc.start()
        self._start_metrics()
        logger.info(
            "inference service starting",
            extra={"grpc_port": self.port, "metrics_port": self.metrics_port},
        )
        client = None
        if self.settings.streams or self.settings.watches_model:
            client = connect(self.settings.redis_url)
        loaded = self._load_model(client if self.settings.watches_model else None)
        self.model, detector = loaded, loaded.detector
        self.detector = detector
        metrics = self.metrics

        def observe(batch_size: int, compute: float) -> None:
            self._jobs_resolved += batch_size
            metrics.batch_size.observe(batch_size)
            metrics.compute_seconds.observe(compute)

        batcher = self.batcher = DynamicBatcher(
            detector,
            max_batch_size=self.settings.max_batch_size,
            max_queue_delay=self.settings.max_queue_delay,
            max_decode_wait=self.settings.max_decode_wait,
            max_queue_size=self.settings.max_queue_size,
            decode_workers=self.settings.decode_workers,
            decode_reduce=self.settings.decode_reduce,
            max_pixels=self.settings.max_image_pixels,
            max_queue_bytes=self.settings.max_queue_bytes,
            max_tiles=self.settings.max_tiles,
            on_batch=observe,
            on_job=self._observe_job,
            model_version=loaded.version,
        )
        watcher = self.watcher
        status = watcher.status if watcher else ModelStatus(loaded.version, loaded.variant, "")
        self._export_model(loaded)
        self.servicer.attach(self.batcher, self._model_info(loaded, status))
        self._supervise_batcher(batcher)
        if watcher is not None:
            watcher.attach(batcher)
            watcher.start()
        if self.settings.streams:
            assert client is not None
            layout = self.settings.layout
            self._check_layout(client, layout)
            with self.supervisor.adopting():
                self.consumer = StreamConsumer(client, layout, batcher, self.metrics, self.settings)
            self._supervise_consumer(self.consumer)
            self.consumer.start()
            # The reader creates the groups on its first pass: give it a moment, so a
            # healthy start says SERVING at once (Redis down: NOT_SERVING until it is up).
            streams, until = self.consumer.streams, time.monotonic() + GROUPS_WAIT_S
            while not streams.groups_ready and streams.worker.alive and time.monotonic() < until:
                time.sleep(0.01)
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth if self.batcher else 0)
        self.supervisor.on_ready(self._set_ready)
        self.supervisor.start()
        self.ready.set()
        if self.supervisor.ready:
            logger.info("inference service SERVING", extra={"grpc_port": self.port})
        else:
            logger.warning(
                "inference service started, NOT_SERVING until its problems clear",
                extra={"grpc_port": self.port, "problems": self.supervisor.problems()},
            )

    def _set_ready(self, ready: bool) -> None:
        if self._stopping:  # set before stopped, never cleared
            ready = False
        self.grpc.set_ready(ready)
        self.metrics.ready.set(1 if ready else 0)

    def _supervise_batcher(self, batcher: DynamicBatcher) -> None:
        """The model thread cannot be restarted (its death is fatal); jobs admitted must
        be resolved (each model run is progress)."""
        self.supervisor.watch_thread(
            "batcher-model", lambda: batcher.model_alive, stopping=lambda: self._stopping
        )
        self.supervisor.watch_progress(
            "batcher", done=lambda: self._jobs_resolved, pending=lambda: batcher.depth
        )

    def _supervise_consumer(self, consumer: StreamConsumer) -> None:
        streams = consumer.streams
        self.supervisor.watch_progress(
            "stream",
            done=lambda: streams.settled,
            taken=lambda: streams.taken,
            pending=lambda: consumer.inflight,
        )
        self.supervisor.watch_progress(
            "publish", done=lambda: consumer.published_total, pending=lambda: consumer.unpublished
        )
        self.supervisor.require("stream-groups", lambda: streams.groups_ready)

    def _observe_job(self, queue_seconds: float, decode_seconds: float) -> None:
        self.metrics.queue_seconds.observe(queue_seconds)
        self.metrics.decode_seconds.observe(decode_seconds)

    @staticmethod
    def _check_layout(client: object, layout: object) -> None:
        """Fail fast on a partition-count mismatch; tolerate Redis being down at start."""
        from facemask.infra.redisconn import CONNECTION_ERRORS

        try:
            layout.check_meta(client)  # type: ignore[attr-defined]
        except CONNECTION_ERRORS as exc:
            logger.warning("redis not reachable at start; will retry", extra={"error": str(exc)})

    def stop(self) -> bool:
        """Graceful stop; True when every processed frame was published and acknowledged."""
        if self.stopped.is_set():
            return True
        deadline = time.monotonic() + self.settings.drain_timeout
        self._stopping = True
        self.supervisor.stop()
        self._set_ready(False)
        logger.info("draining", extra={"timeout": self.settings.drain_timeout})
        if self.watcher is not None:
            self.watcher.stop()
        if self.consumer is not None:
            self.consumer.stop_reading()
        self.grpc.stop(grace=max(0.5, min(5.0, deadline - time.monotonic())))
        clean = True
        if self.batcher is not None:
            clean = self.batcher.drain(max(0.0, deadline - time.monotonic()))
        if self.consumer is not None:
            clean = self.consumer.stop(max(0.5, deadline - time.monotonic())) and clean
        if self.batcher is not None:
            self.batcher.close(timeout=1.0)
        if self.model is not None and self.model.owned:
            self.model.detector.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        self.stopped.set()
        logger.info("inference service stopped", extra={"clean": clean})
        return clean
