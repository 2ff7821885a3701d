"""Prometheus metrics of an ingest node (``facemask_ingest_*``, base units).

Each :class:`IngestMetrics` owns its own ``CollectorRegistry`` (several workers can live in
one test process); :meth:`IngestMetrics.serve` exposes it on an HTTP port.

Accounting: every frame kept by the rate cap is *captured*; it is then either *published*,
*dropped* with a reason, or still in the buffer::

    captured = published + dropped{reason!="rate_cap"} + buffer_frames

``dropped{reason="rate_cap"}`` counts the frames skipped at the source by the frame-rate
cap (grabbed but never converted or encoded); the other reasons are ``buffer_full`` (the
ring buffer overflowed while Redis was unreachable, oldest frame first), ``encode_error``,
``too_large``, ``redis_error`` (Redis refused the XADD, e.g. out of memory) and
``shutdown`` (still buffered when the flush deadline passed).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facemask.contracts.wire import is_valid_camera_id
from facemask.infra.metrics import (
    DEFAULT_MAX_CAMERAS,
    LabelLimiter,
    MetricsServer,
    limit_labels,
    serve_metrics,
)
from facemask.infra.watchdog import SupervisorMetrics

DROP_REASONS = ("rate_cap", "buffer_full", "encode_error", "too_large", "redis_error", "shutdown")
ENCODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


class IngestMetrics:
    """The node's metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.supervision = SupervisorMetrics("ingest", r)
        # At most max_cameras camera_id values per service; the rest count as _other.
        self.cameras = cams = LabelLimiter(max_cameras, registry=r, valid=is_valid_camera_id)
        self.frames_captured = limit_labels(
            Counter(
                "facemask_ingest_frames_captured",
                "Frames kept by the frame-rate cap and handed to encoding.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.frames_published = limit_labels(
            Counter(
                "facemask_ingest_frames_published",
                "Frames added to the camera's frame stream.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.frames_dropped = limit_labels(
            Counter(
                "facemask_ingest_frames_dropped",
                "Frames dropped, by reason (rate_cap, buffer_full, encode_error, too_large, "
                "redis_error, shutdown).",
                ["camera_id", "reason"],
                registry=r,
            ),
            cams,
        )
        self.capture_fps = limit_labels(
            Gauge(
                "facemask_ingest_capture_fps",
                "Frames captured per second over the last few seconds.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.encode_seconds = limit_labels(
            Histogram(
                "facemask_ingest_encode_seconds",
                "Time to resize and JPEG-encode one frame.",
                ["camera_id"],
                buckets=ENCODE_BUCKETS,
                registry=r,
            ),
            cams,
        )
        self.published_bytes = limit_labels(
            Counter(
                "facemask_ingest_published_bytes",
                "Encoded image bytes added to frame streams.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.redis_reconnects = Counter(
            "facemask_ingest_redis_reconnects",
            "Successful reconnections to Redis after it was unreachable.",
            registry=r,
        )
        self.redis_refusals = Counter(
            "facemask_ingest_redis_refusals",
            "Batches of frames Redis refused for now, by kind (oom at maxmemory, readonly "
            "during a failover, ...): the frames stay buffered and are sent again.",
            ["kind"],
            registry=r,
        )
        self.redis_up = Gauge(
            "facemask_ingest_redis_up", "1 while Redis accepts the node's writes.", registry=r
        )
        self.buffer_frames = Gauge(
            "facemask_ingest_buffer_frames",
            "Frames waiting in the in-memory ring buffer (including the batch in flight).",
            registry=r,
        )
        self.buffer_capacity = Gauge(
            "facemask_ingest_buffer_capacity_frames",
            "Capacity of the in-memory ring buffer.",
            registry=r,
        )
        self.camera_up = limit_labels(
            Gauge(
                "facemask_ingest_camera_up",
                "1 while the camera's source delivers frames.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.source_errors = limit_labels(
            Counter(
                "facemask_ingest_source_errors",
                "Times the camera's source failed to open or stopped delivering frames.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.voice_prompts = limit_labels(
            Counter(
                "facemask_ingest_voice_prompts",
                "Alerts of the node's cameras seen by the voice prompt, by outcome (played, "
                "rate_limited, busy, stale, failed).",
                ["camera_id", "outcome"],
                registry=r,
            ),
            cams,
        )

        self._server: MetricsServer | None = None

    def add_camera(self, camera_id: str) -> None:
        """Create the camera's series at zero so dashboards see them before any event."""
        self.frames_captured.labels(camera_id)
        self.frames_published.labels(camera_id)
        self.published_bytes.labels(camera_id)
        self.source_errors.labels(camera_id)
        self.capture_fps.labels(camera_id).set(0)
        self.camera_up.labels(camera_id).set(0)
        for reason in DROP_REASONS:
            self.frames_dropped.labels(camera_id, reason)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (0 when absent); ``name`` as exposed (``..._total``)."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else float(got)

    def serve(self, host: str, port: int) -> int:
        """Expose the metrics over HTTP; returns the bound port (``port`` 0: any free)."""
        self._server = serve_metrics(self.registry, port, host)
        return self._server.port

    def close(self) -> None:
        """Stop the HTTP server, if any."""
        if self._server is not None:
            self._server.close()
            self._server = None
