"""MQTT sink (paho-mqtt 2.x): alert events and a retained compliance state per camera.

Topics (``<prefix>`` is ``FACEMASK_ALERTS_MQTT_TOPIC_PREFIX``, default ``facemask``; a
``/``, ``+`` or ``#`` in a camera id becomes ``_``)::

    <prefix>/<camera>/alert        one JSON message per alert, QoS 1, not retained
    <prefix>/<camera>/compliance   JSON state, QoS 1, retained: {"camera_id", "online",
                                   "status", "state", "compliance", "masked", "faces",
                                   "window_s"} (state: live | not_analysed | no_frames |
                                   offline)
    <prefix>/alerts/status         "online" (retained) / "offline" (last will)

The client connects in the background and reconnects by itself (1 s to 30 s back-off).
An alert counts as delivered once the broker acknowledged it (PUBACK) within
``mqtt_timeout``; while the broker is unreachable deliveries fail and the outbox retries
them. Compliance states are re-published after every reconnect, so the retained state is
current even after a broker restart without persistence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from pydantic import Field

from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord
from services.alerts.sinks import (
    Sink,
    SinkConfig,
    SinkContext,
    SinkError,
    alert_links,
    topic_part,
)

logger = logging.getLogger(__name__)


class MqttSink(Sink):
    """Alerts and compliance over MQTT."""

    name: ClassVar[str] = "mqtt"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        client_id: str,
        timeout: float,
        base_url: str,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.tls = parts.scheme == "mqtts"
        self.port = parts.port or (8883 if self.tls else 1883)
        self.prefix = prefix
        self.timeout = timeout
        self.base_url = base_url
        self.connected = threading.Event()
        self._states: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if parts.username:
            self.client.username_pw_set(
                unquote(parts.username), unquote(parts.password) if parts.password else None
            )
        if self.tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @property
    def status_topic(self) -> str:
        """Retained service status topic."""
        return f"{self.prefix}/alerts/status"

    def alert_topic(self, camera_id: str) -> str:
        """Topic of a camera's alert events."""
        return f"{self.prefix}/{topic_part(camera_id)}/alert"

    def compliance_topic(self, camera_id: str) -> str:
        """Retained topic of a camera's compliance state."""
        return f"{self.prefix}/{topic_part(camera_id)}/compliance"

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("mqtt connection refused", extra={"reason": str(reason)})
            return
        self.connected.set()
        logger.info("mqtt connected", extra={"host": self.host, "port": self.port})
        client.publish(self.status_topic, "online", qos=1, retain=True)
        with self._lock:
            states = dict(self._states)
        for camera_id, payload in states.items():
            client.publish(self.compliance_topic(camera_id), payload, qos=1, retain=True)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self.connected.is_set():
            logger.warning("mqtt disconnected", extra={"reason": str(reason)})
        self.connected.clear()

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if not self.connected.is_set():
            raise SinkError(f"not connected to {self.host}:{self.port}")
        try:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise SinkError(f"publish failed: {exc}") from exc
        if not info.is_published():
            raise SinkError(f"no PUBACK within {self.timeout}s")

    def deliver(self, alert: AlertRecord) -> None:
        doc = {"event": "alert", **alert.to_json(), **alert_links(alert, self.base_url)}
        payload = json.dumps(doc, separators=(",", ":")).encode()
        self._publish(self.alert_topic(alert.camera_id), payload, retain=False)

    def publish_compliance(self, camera_id: str, state: Mapping[str, Any]) -> None:
        payload = json.dumps(dict(state), separators=(",", ":"), sort_keys=True).encode()
        with self._lock:
            if self._states.get(camera_id) == payload:
                return
            self._states[camera_id] = payload
        if self.connected.is_set():
            # Fire and forget: a state lost in a disconnect is re-sent on reconnect.
            self.client.publish(self.compliance_topic(camera_id), payload, qos=1, retain=True)

    def close(self) -> None:
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()


class MqttConfig(SinkConfig):
    """Options of the ``mqtt`` sink."""

    type: Literal["mqtt"] = "mqtt"
    url: str = Field(min_length=1, description="mqtt[s]://[user:pass@]host[:port]")
    prefix: str = Field(min_length=1, description="topic root")
    client_id: str = Field(description="MQTT client id")
    timeout: float = Field(gt=0.0, description="seconds to get PUBACK")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> MqttConfig | None:
        if not settings.mqtt_url:
            return None
        return cls(
            url=settings.mqtt_url,
            prefix=settings.mqtt_topic_prefix,
            client_id=settings.mqtt_client,
            timeout=settings.mqtt_timeout,
        )

    def create(self, context: SinkContext) -> MqttSink:
        return MqttSink(
            self.url,
            prefix=self.prefix,
            client_id=self.client_id,
            timeout=self.timeout,
            base_url=context.public_base_url,
        )
