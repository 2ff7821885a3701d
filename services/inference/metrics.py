"""Prometheus metrics of the inference service (``facemask_`` prefix, base units).

Labels are bounded: ``camera_id`` (one per camera), ``source`` (grpc | stream),
``outcome`` / ``reason`` (a fixed vocabulary), never a frame id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facemask.contracts.wire import is_valid_camera_id
from facemask.infra.metrics import DEFAULT_MAX_CAMERAS, LabelLimiter, limit_labels
from facemask.infra.watchdog import SupervisorMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


class InferenceMetrics:
    """All metrics of one service instance, registered in ``registry``."""

    def __init__(
        self, registry: CollectorRegistry, *, max_cameras: int = DEFAULT_MAX_CAMERAS
    ) -> None:
        self.registry = registry
        self.supervision = SupervisorMetrics("inference", registry)
        # At most max_cameras camera_id values per service; the rest count as _other.
        self.cameras = cams = LabelLimiter(max_cameras, registry=registry, valid=is_valid_camera_id)
        self.requests = Counter(
            "facemask_inference_requests_total",
            "Images handled, by source (grpc, stream) and outcome.",
            ["source", "outcome"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "facemask_inference_batch_size",
            "Images per model call.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "facemask_inference_queue_seconds",
            "Time an image waited for its batch (after decode).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "facemask_inference_decode_seconds",
            "JPEG/PNG decode and resize time per image.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Histogram(
            "facemask_inference_compute_seconds",
            "Model call plus post-processing time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.frame_latency = Histogram(
            "facemask_inference_frame_latency_seconds",
            "Capture time to detections entry published, per stream frame.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "facemask_inference_queue_depth",
            "Images admitted and not yet answered.",
            registry=registry,
        )
        self.frames_processed = limit_labels(
            Counter(
                "facemask_frames_processed_total",
                "Stream frames with a published detections entry (status ok).",
                ["camera_id"],
                registry=registry,
            ),
            cams,
        )
        self.faces_detected = limit_labels(
            Counter(
                "facemask_faces_detected_total",
                "Faces detected in stream frames, by label.",
                ["camera_id", "label"],
                registry=registry,
            ),
            cams,
        )
        self.frames_skipped = limit_labels(
            Counter(
                "facemask_frames_skipped_total",
                "Stream frames not run through the model, by reason.",
                ["camera_id", "reason"],
                registry=registry,
            ),
            cams,
        )
        self.model_runs = limit_labels(
            Counter(
                "facemask_inference_model_runs_total",
                "Model runs (batch items) spent on stream frames, per camera.",
                ["camera_id"],
                registry=registry,
            ),
            cams,
        )
        self.deadletters = Counter(
            "facemask_inference_deadletter_total",
            "Stream entries moved to the dead-letter stream, by reason.",
            ["reason"],
            registry=registry,
        )
        self.reclaimed = Counter(
            "facemask_inference_reclaimed_total",
            "Pending stream entries taken over from idle consumers (XAUTOCLAIM).",
            registry=registry,
        )
        self.duplicates = Counter(
            "facemask_inference_duplicates_suppressed_total",
            "Results not published because another consumer owns or acked the frame.",
            registry=registry,
        )
        self.redis_errors = Counter(
            "facemask_inference_redis_errors_total",
            "Redis connection errors seen by the stream consumer.",
            registry=registry,
        )
        self.redis_faults = Counter(
            "facemask_inference_redis_faults_total",
            "Redis faults survived by the stream consumer (backed off, retried), by kind "
            "(facemask.infra.redisconn.FAULT_KINDS).",
            ["kind"],
            registry=registry,
        )
        self.frames_lost = Counter(
            "facemask_inference_frames_lost_total",
            "Stream frames processed whose pending entry Redis lost (restarted without "
            "persistence: nogroup, vanished); their result could not be published.",
            ["reason"],
            registry=registry,
        )
        self.stream_lag = Gauge(
            "facemask_stream_lag",
            "Entries in the stream not yet delivered to the consumer group.",
            ["stream", "group"],
            registry=registry,
        )
        self.stream_pending = Gauge(
            "facemask_stream_pending",
            "Entries delivered to the consumer group and not yet acknowledged.",
            ["stream", "group"],
            registry=registry,
        )
        self.model_info = Gauge(
            "facemask_model_info",
            "The model this service runs (value 1; only the running version has a series): "
            "version upstream or a model store version, variant runtime-precision.",
            ["name", "version", "runtime", "precision", "variant"],
            registry=registry,
        )
        self.model_load_failures = Counter(
            "facemask_model_load_failures_total",
            "Model versions wanted (promoted for the cluster) that could not be made ready, "
            "by reason (fetch, load, warmup, incompatible); the service kept its model.",
            ["reason"],
            registry=registry,
        )
        self.model_variant_info = Gauge(
            "facemask_model_variant_info",
            "The model variant this service runs (value 1) and how it was chosen: measured "
            "or cached by the auto runtime, or set explicitly.",
            ["runtime", "precision", "chosen_by"],
            registry=registry,
        )
        self.model_variant_rate = Gauge(
            "facemask_model_variant_images_per_second",
            "Model-only images/s of each variant the auto runtime measured on this CPU at the "
            "service's batch size (or read from its cache).",
            ["variant"],
            registry=registry,
        )
        self.ready = Gauge(
            "facemask_inference_ready",
            "1 when the model is loaded and warmed up and the service is SERVING.",
            registry=registry,
        )
