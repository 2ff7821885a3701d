"""The Prometheus ``/metrics`` HTTP endpoint of a service (one way to run it) and the
bound on label cardinality every service's per-camera metrics share
(:class:`LabelLimiter`, :func:`limit_labels`: at most ``max_cameras`` camera label
values per service, the rest counted under ``_other``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from facemask.contracts.registry import DEFAULT_MAX_CAMERAS

logger = logging.getLogger(__name__)


class MetricsServer:
    """A running ``/metrics`` endpoint (its own daemon thread); :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server: WSGIServer | None = server
        self._thread = thread
        self.port = int(server.server_port)
        """The bound port (the one asked for, or a free one when asked for 0)."""

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5.0)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (``port`` 0: any free port); raises ``OSError``
    when the address cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


# -- bounded label cardinality ----------------------------------------------------------------

OVERFLOW_LABEL = "_other"
"""The label value under which cameras beyond a service's limit (or invalid ids) are counted;
no valid camera id starts with ``_``."""


class LabelLimiter:
    """Admits at most ``max_values`` distinct values of one label (``camera_id``) for every
    metric of a service; later values (and values ``valid`` refuses) map to
    :data:`OVERFLOW_LABEL`. The first overflow is logged once and every overflowing
    ``labels()`` call is counted in ``facemask_metric_label_overflow_total{label}`` when a
    registry is given. Thread-safe; admitted values stay admitted."""

    def __init__(
        self,
        max_values: int = DEFAULT_MAX_CAMERAS,
        *,
        label: str = "camera_id",
        registry: CollectorRegistry | None = None,
        valid: Callable[[str], bool] | None = None,
    ) -> None:
        if max_values < 1:
            raise ValueError("max_values must be >= 1")
        self.max_values = max_values
        self.label = label
        self._valid = valid
        self._admitted: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False
        self.overflow = (
            Counter(
                "facemask_metric_label_overflow",
                "Metric updates counted under the overflow label value (_other) because the "
                "label's distinct values reached the service's limit or the value was invalid.",
                ["label"],
                registry=registry,
            )
            if registry is not None
            else None
        )

    @property
    def admitted(self) -> int:
        """Distinct values admitted so far."""
        return len(self._admitted)

    def admit(self, value: str) -> str:
        """``value`` if it is (or can still be) admitted, else :data:`OVERFLOW_LABEL`."""
        if value in self._admitted:
            return value
        ok = self._valid is None or self._valid(value)
        with self._lock:
            if ok and (value in self._admitted or len(self._admitted) < self.max_values):
                self._admitted.add(value)
                return value
            warn = not self._warned
            self._warned = True
        if self.overflow is not None:
            self.overflow.labels(self.label).inc()
        if warn:
            logger.warning(
                "metric label values beyond the limit are counted as %s",
                OVERFLOW_LABEL,
                extra={
                    "label": self.label,
                    "limit": self.max_values,
                    "value": str(value)[:80],
                    "valid": ok,
                },
            )
        return OVERFLOW_LABEL

    def is_admitted(self, value: str) -> bool:
        """Whether ``value`` has its own series."""
        return value in self._admitted


MetricT = TypeVar("MetricT", bound=MetricWrapperBase)


def limit_labels(metric: MetricT, limiter: LabelLimiter) -> MetricT:
    """``metric`` itself, its ``limiter.label`` values now going through ``limiter``.

    ``labels(...)`` (positional or by name) and ``remove(...)`` behave as before for
    admitted values, so call sites such as ``metrics.frames_processed.labels(camera).inc()``
    stay unchanged and the object is still the Prometheus metric (exposition, docs).
    ``remove`` of a value that never got its own series does nothing (the overflow series
    is shared by every such value)."""
    names = tuple(metric._labelnames)
    if limiter.label not in names:
        raise ValueError(f"metric {metric._name} has no label {limiter.label!r}")
    index = names.index(limiter.label)
    original_labels = metric.labels
    original_remove = metric.remove

    def labels(*values: Any, **kwargs: Any) -> Any:
        if limiter.label in kwargs:
            kwargs[limiter.label] = limiter.admit(str(kwargs[limiter.label]))
        elif len(values) > index:
            values = (*values[:index], limiter.admit(str(values[index])), *values[index + 1 :])
        return original_labels(*values, **kwargs)

    def remove(*values: Any) -> None:
        if len(values) > index and not limiter.is_admitted(str(values[index])):
            return
        original_remove(*values)

    setattr(metric, "labels", labels)  # noqa: B010 - an instance attribute shadows the method
    setattr(metric, "remove", remove)  # noqa: B010
    return metric
