"""serve_metrics: a registry's /metrics on a port, closed cleanly; the camera_id label
limit every service's metrics share."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from facemask.contracts.wire import is_valid_camera_id
from facemask.infra.metrics import OVERFLOW_LABEL, LabelLimiter, limit_labels, serve_metrics


def test_serves_the_registry_and_releases_the_port_on_close() -> None:
    registry = CollectorRegistry()
    Counter("facemask_test_things", "Things.", registry=registry).inc(3)
    server = serve_metrics(registry, 0, "127.0.0.1")
    assert server.port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "facemask_test_things_total 3.0" in body
    server.close()
    server.close()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass
    # The port is free again.
    again = serve_metrics(registry, server.port, "127.0.0.1")
    assert again.port == server.port
    again.close()


# -- bounded camera_id cardinality ----------------------------------------------------------


def series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name
    }


def test_values_beyond_the_limit_are_counted_under_other_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    limiter = LabelLimiter(3, registry=registry, valid=is_valid_camera_id)
    frames = limit_labels(
        Counter("facemask_test_frames", "Frames.", ["camera_id"], registry=registry), limiter
    )
    faces = limit_labels(
        Counter("facemask_test_faces", "Faces.", ["camera_id", "label"], registry=registry),
        limiter,
    )
    with caplog.at_level("WARNING", logger="facemask.infra.metrics"):
        for i in range(5000):
            frames.labels(f"cam-{i}").inc()
            faces.labels(camera_id=f"cam-{i}", label="mask").inc()
        frames.labels("cam-1").inc()  # an admitted camera keeps its series
        frames.labels("bad\nid").inc()  # invalid ids never get a series
    got = series(registry, "facemask_test_frames_total")
    assert got == {
        (("camera_id", "cam-0"),): 1.0,
        (("camera_id", "cam-1"),): 2.0,
        (("camera_id", "cam-2"),): 1.0,
        (("camera_id", OVERFLOW_LABEL),): 4998.0,
    }
    assert len(series(registry, "facemask_test_faces_total")) == 4
    overflow = series(registry, "facemask_metric_label_overflow_total")
    assert overflow == {(("label", "camera_id"),): 2 * 4997 + 1}
    assert len([r for r in caplog.records if "beyond the limit" in r.getMessage()]) == 1
    assert limiter.admitted == 3


def test_remove_leaves_the_shared_overflow_series_alone() -> None:
    registry = CollectorRegistry()
    limiter = LabelLimiter(1)
    gauge = limit_labels(
        Gauge("facemask_test_ratio", "R.", ["camera_id"], registry=registry), limiter
    )
    gauge.labels("a").set(0.5)
    gauge.labels("b").set(0.25)  # over the limit: _other
    gauge.remove("b")
    assert series(registry, "facemask_test_ratio") == {
        (("camera_id", "a"),): 0.5,
        (("camera_id", OVERFLOW_LABEL),): 0.25,
    }
    gauge.remove("a")
    assert (("camera_id", "a"),) not in series(registry, "facemask_test_ratio")


def test_a_metric_without_the_label_is_refused() -> None:
    with pytest.raises(ValueError, match="camera_id"):
        limit_labels(Counter("facemask_test_x", "X.", ["reason"], registry=None), LabelLimiter(2))
    with pytest.raises(ValueError):
        LabelLimiter(0)


@pytest.mark.parametrize("service", ["inference", "alerts", "ingest"])
def test_every_service_bounds_its_camera_series_on_metrics(service: str) -> None:
    """Issue 13: 5000 frames with new camera ids made 10,099 series on /metrics."""
    from services.alerts.metrics import AlertMetrics
    from services.inference.metrics import InferenceMetrics
    from services.ingest.metrics import IngestMetrics

    registry = CollectorRegistry()
    if service == "inference":
        m: Any = InferenceMetrics(registry, max_cameras=10)
        hits = (m.frames_processed, m.model_runs)
    elif service == "alerts":
        m = AlertMetrics(registry, max_cameras=10)
        hits = (m.alerts, m.snapshots_missing, m.alerts_suppressed)
    else:
        m = IngestMetrics(registry, max_cameras=10)
        hits = (m.frames_published, m.frames_captured, m.source_errors)
    for i in range(5000):
        for metric in hits:
            metric.labels(f"cam{i}").inc()
    server = serve_metrics(registry, 0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            body = r.read().decode()
    finally:
        server.close()
    camera_values = {
        line.split('camera_id="', 1)[1].split('"', 1)[0]
        for line in body.splitlines()
        if 'camera_id="' in line
    }
    assert camera_values == {f"cam{i}" for i in range(10)} | {OVERFLOW_LABEL}
    assert len(body) < 20_000
