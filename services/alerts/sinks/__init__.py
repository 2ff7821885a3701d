"""Alert sinks as plugins: a config class plus its implementation, as Frigate's detectors.

Each module of this package defines a :class:`SinkConfig` subclass with
``type: Literal["<name>"]`` and typed options, :meth:`SinkConfig.from_settings` (its options
from the service settings, None when the sink is not enabled) and :meth:`SinkConfig.create`
(the :class:`Sink`). :func:`sink_configs` discovers them; a sink defined elsewhere joins by
subclassing ``SinkConfig`` in a module imported before the service starts. Every
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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from facemask.contracts.streams import StreamLayout
from facemask.core.plugins import discover
from facemask.infra.redisconn import RedisClient
from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord

ORDER = ("webhook", "slack", "mqtt", "redis")
"""Built-in sinks in the order their outbox rows are made; others follow by name."""


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


class SinkConfig(BaseModel):
    """The typed options of one sink (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> SinkConfig | None:
        """This sink's options from the service settings; None when it is not enabled."""
        raise NotImplementedError

    def create(self, context: SinkContext) -> Sink:
        """The sink these options describe."""
        raise NotImplementedError


def sink_configs() -> dict[str, type[SinkConfig]]:
    """Every sink's config class by sink name (built-in first, in :data:`ORDER`)."""
    found = discover(SinkConfig, __name__)
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def load_builtin_sinks() -> dict[str, type[SinkConfig]]:
    """The sinks available (importing the built-in ones)."""
    return sink_configs()


def build_sinks(settings: AlertSettings, context: SinkContext) -> list[Sink]:
    """Every sink the settings enable, in :func:`sink_configs` order."""
    out = []
    for cls in sink_configs().values():
        config = cls.from_settings(settings)
        if config is not None:
            out.append(config.create(context))
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
