"""Prometheus metrics of the alert service (``facemask_`` prefix, base units).

Labels are bounded: ``camera_id`` (one per camera), ``label`` (mask | no_mask), ``sink``
(the enabled sinks), ``outcome`` / ``reason`` / ``state`` (fixed vocabularies). Each
:class:`AlertMetrics` owns its registry, so several services can live in one test process.

Delivery outcomes: ``delivered``; ``retry`` (an attempt failed, the delivery is tried
again later); ``rejected`` (the receiver refused it for good, e.g. HTTP 400); ``expired``
(still undelivered after ``outbox_ttl``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facemask.contracts.wire import is_valid_camera_id
from facemask.infra.metrics import DEFAULT_MAX_CAMERAS, LabelLimiter, limit_labels
from facemask.infra.watchdog import SupervisorMetrics

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AlertMetrics:
    """All metrics of one alert service instance."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.supervision = SupervisorMetrics("alerts", r)
        # At most max_cameras camera_id values per service; the rest count as _other.
        self.cameras = cams = LabelLimiter(max_cameras, registry=r, valid=is_valid_camera_id)
        self.alerts = limit_labels(
            Counter(
                "facemask_alerts",
                "Alerts raised (stored), per camera.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.alerts_suppressed = limit_labels(
            Counter(
                "facemask_alerts_suppressed",
                "Frames where a violating person track was held back by its own cooldown "
                "(it alerted less than `cooldown` seconds before; other people are never held "
                "back).",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        # --- zones (engine) ---
        self.faces_ignored = limit_labels(
            Counter(
                "facemask_alerts_faces_ignored",
                "Faces dropped before tracking by the camera's zones, by reason (ignore_mask: "
                "inside an ignore mask, outside_zone: outside every include zone).",
                ["camera_id", "reason"],
                registry=r,
            ),
            cams,
        )
        self.compliance = limit_labels(
            Gauge(
                "facemask_compliance_ratio",
                "Masked faces / all faces over the compliance window (0..1); absent without faces.",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.faces_seen = limit_labels(
            Counter(
                "facemask_faces_seen",
                "Faces in the detections entries processed, by label.",
                ["camera_id", "label"],
                registry=r,
            ),
            cams,
        )
        self.deliveries = Counter(
            "facemask_sink_deliveries",
            "Delivery attempts by sink and outcome (delivered, retry, rejected, expired).",
            ["sink", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "facemask_sink_delivery_latency_seconds",
            "Time from an alert being stored to its successful delivery, per sink.",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "facemask_alerts_outbox_depth",
            "Deliveries waiting in the outbox, per sink.",
            ["sink"],
            registry=r,
        )
        self.snapshots_missing = limit_labels(
            Counter(
                "facemask_alert_snapshots_missing",
                "Alerts raised without a picture (the frame was trimmed or unreadable).",
                ["camera_id"],
                registry=r,
            ),
            cams,
        )
        self.snapshots_deleted = Counter(
            "facemask_alert_snapshots_deleted",
            "Snapshot files deleted by retention, by reason (age, size).",
            ["reason"],
            registry=r,
        )
        self.snapshot_bytes = Gauge(
            "facemask_alert_snapshot_bytes",
            "Bytes of snapshot files on disk.",
            registry=r,
        )
        self.deadletters = Counter(
            "facemask_alerts_deadletter",
            "Malformed detections entries moved to the dead-letter stream, by reason.",
            ["reason"],
            registry=r,
        )
        self.consumed = Counter(
            "facemask_alerts_detections_consumed",
            "Detections entries processed (duplicates and dead letters included).",
            registry=r,
        )
        self.duplicates = Counter(
            "facemask_alerts_duplicates",
            "Detections entries dropped as a duplicate of a frame already processed.",
            registry=r,
        )
        self.replayed = Counter(
            "facemask_alerts_replayed",
            "Entries acknowledged without processing: already committed before a restart.",
            registry=r,
        )
        self.reclaimed = Counter(
            "facemask_alerts_reclaimed",
            "Pending entries taken over from idle consumers (XAUTOCLAIM).",
            registry=r,
        )
        self.redis_errors = Counter(
            "facemask_alerts_redis_errors",
            "Redis connection errors seen by the consumer.",
            registry=r,
        )
        self.redis_faults = Counter(
            "facemask_alerts_redis_faults_total",
            "Redis faults survived by the consumer (backed off, retried), by kind "
            "(facemask.infra.redisconn.FAULT_KINDS).",
            ["kind"],
            registry=r,
        )
        self.batch_failures = Counter(
            "facemask_alerts_batch_failures",
            "Batches rolled back (state restored, entries read again).",
            registry=r,
        )
        self.processing_lag = Gauge(
            "facemask_alerts_processing_lag_seconds",
            "Capture time to processing of the last detections entry.",
            registry=r,
        )
        self.frames_rejected = Counter(
            "facemask_alerts_frames_rejected",
            "Frames refused before any decode for a picture (where: latest = the dashboard's "
            "latest frame, snapshot = an alert's snapshot; reason: too_large, size_mismatch, "
            "corrupt_image, unsupported_format, ...).",
            ["where", "reason"],
            registry=r,
        )
        self.latest_renders = Counter(
            "facemask_alerts_latest_renders",
            "Latest-frame pictures rendered for the dashboard (cache misses).",
            registry=r,
        )
        self.sse_clients = Gauge(
            "facemask_alerts_sse_clients",
            "Open server-sent event streams.",
            registry=r,
        )
        self.ready = Gauge(
            "facemask_alerts_ready",
            "1 when Redis answers and the consumer is running.",
            registry=r,
        )
        # -- camera health ---------------------------------------------------------------
        self.camera_state = limit_labels(
            Gauge(
                "facemask_alerts_camera_state",
                "1 for the camera's current state, 0 for the others (state: live, "
                "not_analysed, no_frames, offline; see the README's Camera states).",
                ["camera_id", "state"],
                registry=r,
            ),
            cams,
        )
        self.cameras_removed = Counter(
            "facemask_alerts_cameras_removed",
            "Stale cameras forgotten, by reason (api: DELETE /api/cameras/{id}; retention: "
            "offline longer than camera_retention).",
            ["reason"],
            registry=r,
        )
