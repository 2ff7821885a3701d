"""Alert sinks: a small registry of delivery targets, each enabled and configured on its own.

A sink class registers itself with ``@register_sink("name")`` and builds itself from the
settings with :meth:`Sink.from_settings` (returning None when it is not configured). Every
alert gets one outbox row per enabled sink, and one :class:`~services.alerts.outbox.
OutboxWorker` thread per sink delivers them, so a slow or failing sink delays only itself.

``deliver`` raises :class:`SinkError` for a failure worth retrying (network, timeout,
HTTP 5xx / 429) and :class:`PermanentSinkError` when the receiver refused the alert for
good (HTTP 4xx): that delivery is marked failed and not retried.

Built-in sinks: ``webhook`` (signed JSON POST), ``slack`` (incoming webhook), ``mqtt``
(``<prefix>/<camera>/alert`` events, retained ``<prefix>/<camera>/compliance`` state) and
``redis`` (the alerts stream the ingest nodes' voice prompt reads).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from facemask.contracts.streams import StreamLayout
from facemask.infra.redisconn import RedisClient
from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord

BUILTIN_MODULES = (
    "services.alerts.sinks.webhook",
    "services.alerts.sinks.slack",
    "services.alerts.sinks.mqtt",
    "services.alerts.sinks.redisstream",
)


class SinkError(Exception):
    """A delivery failed; it will be retried (after ``retry_after`` seconds when given)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """The receiver refused the delivery for good; it is not retried."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What sinks may need besides the settings."""

    client: RedisClient
    layout: StreamLayout
    public_base_url: str


class Sink(ABC):
    """A delivery target of alerts."""

    name: ClassVar[str] = ""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (called once before the first delivery)."""

    @abstractmethod
    def deliver(self, alert: AlertRecord) -> None:
        """Deliver one stored alert."""

    def publish_compliance(self, camera_id: str, state: Mapping[str, Any]) -> None:  # noqa: B027
        """Publish a camera's compliance state (sinks that keep state override this)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: AlertSettings, context: SinkContext) -> Sink | None:
        """The configured sink, or None when the settings do not enable it."""


SINKS: dict[str, type[Sink]] = {}
S = TypeVar("S", bound=type[Sink])


def register_sink(name: str) -> Callable[[S], S]:
    """Class decorator: make a sink available under ``name``."""

    def decorate(cls: S) -> S:
        if name in SINKS and SINKS[name] is not cls:
            raise ValueError(f"sink {name!r} registered twice")
        cls.name = name
        SINKS[name] = cls
        return cls

    return decorate


def load_builtin_sinks() -> dict[str, type[Sink]]:
    """Import the built-in sink modules (they register themselves)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(SINKS)


def build_sinks(settings: AlertSettings, context: SinkContext) -> list[Sink]:
    """Every sink the settings enable, in registry order."""
    out = []
    for cls in load_builtin_sinks().values():
        sink = cls.from_settings(settings, context)
        if sink is not None:
            out.append(sink)
    return out


def alert_links(alert: AlertRecord, base_url: str) -> dict[str, str | None]:
    """Absolute URLs of an alert's snapshot and of the dashboard."""
    base = base_url.rstrip("/")
    alert_id = alert.alert_id
    snapshot = f"{base}/api/alerts/{alert_id}/snapshot.jpg" if alert.has_snapshot else None
    return {"snapshot_url": snapshot, "dashboard_url": f"{base}/#alert-{alert_id}"}


def topic_part(camera_id: str) -> str:
    """A camera id usable as one MQTT topic level (``/``, ``+``, ``#`` replaced)."""
    return "".join("_" if c in "/+#" else c for c in camera_id)
