"""Settings of the alert service (environment prefix ``FACEMASK_ALERTS_``).

Every setting is ``FACEMASK_ALERTS_<NAME>`` (the shared ones - Redis URL, stream layout,
logging - may also be given once as ``FACEMASK_<NAME>``). Per-camera rule overrides are a
JSON object keyed by camera id, each value overriding any of ``k``, ``n``, ``min_score``,
``min_face``, ``cooldown``, ``group_window``::

    FACEMASK_ALERTS_RULES='{"lobby": {"k": 3, "n": 5}, "door": {"min_face": 40}}'

Zones (ignore masks, include zones; :mod:`services.alerts.zones`) are a JSON object keyed
by camera id too, polygons in frame-relative coordinates (zones set through the API
replace a camera's configured ones)::

    FACEMASK_ALERTS_ZONES='{"lobby": {"ignore": [{"name": "poster",
        "points": [[0.47, 0.18], [0.54, 0.18], [0.54, 0.3], [0.47, 0.3]]}]}}'

Sinks are enabled by configuring them: ``WEBHOOK_URL`` (+ ``WEBHOOK_SECRET``, required),
``SLACK_WEBHOOK_URL``, ``MQTT_URL`` (``mqtt://[user:pass@]host[:1883]`` or ``mqtts://``);
the Redis alerts stream (read by the ingest nodes' voice prompt) is on unless
``REDIS_SINK=false``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import SettingsConfigDict

from facemask.contracts.wire import DEFAULT_MAX_CLOCK_SKEW, WireError, validate_camera_id
from facemask.infra.netaddr import is_loopback
from facemask.infra.settings import ServiceSettings
from facemask.infra.watchdog import SupervisionSettings
from services.alerts.zones import ZoneSpec, zone_problems


def _problem(message: str) -> PydanticCustomError:
    """A validation error shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("alerts_config", "{message}", {"message": message})


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _default_consumer() -> str:
    # Stable across restarts on purpose: entries this consumer read and did not
    # acknowledge before a crash are found again with XREADGROUP id 0 after the restart.
    return f"alerts-{socket.gethostname()}"


class RuleOverride(BaseModel):
    """Per-camera overrides of the alert rule (unset keys keep the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int | None = Field(None, ge=1, le=1000)
    n: int | None = Field(None, ge=1, le=1000)
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    min_face: int | None = Field(None, ge=0, le=16384)
    cooldown: float | None = Field(None, ge=0.0, le=86400.0)
    group_window: float | None = Field(None, ge=0.0, le=3600.0)


class AlertSettings(ServiceSettings, SupervisionSettings):
    """Every knob of the alert service; validated at start (``--check-config``)."""

    model_config = SettingsConfigDict(env_prefix="FACEMASK_ALERTS_", extra="forbid")

    # HTTP API + dashboard
    host: str = Field(
        "127.0.0.1",
        description="address the HTTP API / dashboard binds (not loopback: needs api_token "
        "or allow_anonymous_read)",
    )
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: pick a free one)")
    api_token: str = Field(
        "", description="bearer token required by every route but /healthz, /readyz (empty: off)"
    )
    public_base_url: str = Field(
        "", description="URL the dashboard is reached at, for links in Slack / webhooks"
    )

    # access control (secure by default; see the README's Security section)
    allow_anonymous_read: bool = Field(
        False,
        description="let GET/HEAD of the dashboard and API in without the token (kiosks); "
        "anything else still needs api_token",
    )
    trusted_proxies: str = Field(
        "",
        description="comma-separated proxy addresses/networks whose X-Forwarded-Proto "
        "is believed (https there marks the session cookie Secure)",
    )

    # durable state
    state_dir: str = Field("var/alerts", min_length=1, description="SQLite database directory")
    snapshot_dir: str = Field("", description="snapshot JPEGs (default: <state_dir>/snapshots)")
    snapshot_max_age: float = Field(
        7 * 86400.0, gt=0, description="snapshots older than this (seconds) are deleted"
    )
    snapshot_max_bytes: int = Field(
        1024**3, ge=1024 * 1024, description="oldest snapshots are deleted beyond this total"
    )
    snapshot_quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots")
    history_days: float = Field(90.0, gt=0, description="alerts kept in the history (days)")

    # Redis streams
    consumer_group: str = Field("alerts", min_length=1, description="consumer group")
    consumer_name: str = Field(default_factory=_default_consumer, min_length=1)
    group_start: str = Field(
        "$",
        pattern=r"^(\$|0|\d+-\d+)$",
        description="where a new consumer group starts: $ (new entries) or 0 (whole stream)",
    )
    read_count: int = Field(100, ge=1, le=10_000, description="entries per XREADGROUP")
    read_block: float = Field(1.0, gt=0.0, le=10.0, description="seconds XREADGROUP blocks")
    claim_idle: float = Field(
        60.0, gt=0.0, description="seconds a pending entry of another consumer may idle"
    )
    claim_interval: float = Field(10.0, gt=0.0, description="seconds between reclaim sweeps")
    max_deliveries: int = Field(
        10, ge=1, le=1000, description="deliveries of an entry before it is dead-lettered"
    )
    entry_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="times an entry's processing may raise (a bug, absurd values) before it "
        "is dead-lettered with reason error (the rest of its batch is processed)",
    )
    alerts_maxlen: int = Field(10_000, ge=10, description="MAXLEN ~ of the alerts stream")
    deadletter_maxlen: int = Field(10_000, ge=10, description="MAXLEN ~ of the dead letters")
    max_clock_skew: float = Field(
        DEFAULT_MAX_CLOCK_SKEW,
        gt=0.0,
        le=86400.0,
        description="seconds a detections entry's capture time may lie ahead of this host's "
        "clock; later (or pre-2000) entries are dead-lettered as bad_timestamp",
    )

    # rules (defaults; per-camera overrides in `rules`)
    rule_k: int = Field(5, ge=1, le=1000, description="no_mask frames needed among the last N")
    rule_n: int = Field(8, ge=1, le=1000, description="window of a track's last N frames")
    min_score: float = Field(0.6, ge=0.0, le=1.0, description="no_mask score that counts")
    min_face: int = Field(24, ge=0, le=16384, description="smaller face side (px) that counts")
    cooldown: float = Field(
        5.0,
        ge=0.0,
        le=86400.0,
        description="seconds between two alerts of one person track (other people are "
        "never held back)",
    )
    group_window: float = Field(
        0.0,
        ge=0.0,
        le=3600.0,
        description="seconds: a camera's violators starting within this window of the first "
        "share one alert naming them all, sent when it closes (0: one alert per person)",
    )
    rules: dict[str, RuleOverride] = Field(
        default_factory=dict,
        examples=['{"lobby": {"k": 3, "n": 5}, "door": {"min_face": 40}}'],
        description="per-camera overrides (JSON object by camera id)",
    )

    # tracking / statistics
    track_iou: float = Field(0.3, gt=0.0, le=1.0, description="IoU to continue a track")
    track_reentry: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="seconds a lost person track may be resumed by a face where it was last "
        "seen (dropouts, occlusions); someone back later is a new track",
    )
    zones: dict[str, ZoneSpec] = Field(
        default_factory=dict,
        examples=[
            '{"lobby": {"ignore": [{"name": "poster", "points": [[0.4, 0.1], '
            '[0.6, 0.1], [0.6, 0.3]]}], "include": [], "min_overlap": 0.0}}'
        ],
        description="ignore masks / include zones per camera (JSON object by camera id; "
        "frame-relative polygons)",
    )
    compliance_window: float = Field(60.0, ge=1.0, le=86400.0, description="seconds")
    online_window: float = Field(
        15.0, gt=0.0, description="a camera outside the registry counts online this long"
    )

    # camera health (states live / not_analysed / no_frames / offline; README "Camera states")
    analysis_timeout: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="a camera whose frames arrive but whose detections stop for this long "
        "(seconds, this service's clock) is not_analysed",
    )
    frame_timeout: float = Field(
        10.0,
        gt=0.0,
        le=3600.0,
        description="a heart-beating camera whose node published no frame for this long "
        "(seconds) shows no_frames",
    )
    camera_retention: float = Field(
        7 * 86400.0,
        ge=0.0,
        description="cameras offline longer than this (seconds) are forgotten (0: never)",
    )

    # sinks
    webhook_url: str = Field("", description="webhook endpoint (empty: webhook sink off)")
    webhook_secret: str = Field(
        "", validate_default=True, description="HMAC-SHA256 key of the signature header"
    )
    webhook_timeout: float = Field(5.0, gt=0.0, le=120.0, description="seconds per request")
    slack_webhook_url: str = Field("", description="Slack incoming webhook (empty: off)")
    slack_timeout: float = Field(5.0, gt=0.0, le=120.0, description="seconds per request")
    mqtt_url: str = Field("", description="mqtt[s]://[user:pass@]host[:port] (empty: off)")
    mqtt_topic_prefix: str = Field("facemask", min_length=1, description="topic root")
    mqtt_client_id: str = Field("", description="MQTT client id (default: consumer name)")
    mqtt_timeout: float = Field(5.0, gt=0.0, le=120.0, description="seconds to get PUBACK")
    redis_sink: bool = Field(True, description="publish alerts on the Redis alerts stream")
    outbox_ttl: float = Field(
        86400.0, gt=0.0, description="an undelivered alert is given up after this (seconds)"
    )
    retry_initial: float = Field(1.0, gt=0.0, le=3600.0, description="first retry delay (s)")
    retry_max: float = Field(30.0, gt=0.0, le=86400.0, description="retry delay cap (s)")

    # dashboard frames / events
    latest_min_interval: float = Field(
        0.2, ge=0.0, le=60.0, description="a camera's latest frame is rendered at most this often"
    )
    latest_max_side: int = Field(960, ge=64, le=16384, description="latest frame size cap (px)")
    sse_heartbeat: float = Field(15.0, gt=0.0, le=300.0, description="SSE keep-alive (s)")
    maintenance_interval: float = Field(
        1.0, gt=0.0, le=60.0, description="seconds between gauge / compliance updates"
    )
    shutdown_timeout: float = Field(10.0, ge=0.0, le=300.0, description="SIGTERM drain limit")

    @field_validator("rule_n")
    @classmethod
    def _k_le_n(cls, n: int, info: ValidationInfo) -> int:
        k = info.data.get("rule_k")
        if k is not None and k > n:
            raise _problem(f"rule_k ({k}) must be <= rule_n ({n})")
        return n

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_object(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for camera_id, raw in value.items():
            try:
                validate_camera_id(str(camera_id))
            except WireError as exc:
                raise _problem(f"rules: {exc.detail}") from None
            if isinstance(raw, RuleOverride):
                override = raw
            else:
                try:
                    override = RuleOverride.model_validate(raw)
                except ValidationError as exc:
                    problems = []
                    for err in exc.errors():
                        where = ".".join(str(p) for p in err["loc"])
                        msg = err["msg"]
                        if err["type"] == "extra_forbidden":
                            msg = (
                                "unknown key (valid: k, n, min_score, min_face, cooldown, "
                                "group_window)"
                            )
                        problems.append(f"{where}: {msg}" if where else msg)
                    raise _problem(f"rules[{camera_id}]: " + "; ".join(problems)) from None
            k = override.k if override.k is not None else info.data.get("rule_k", 1)
            n = override.n if override.n is not None else info.data.get("rule_n", k)
            if k > n:
                raise _problem(f"rules[{camera_id}]: k ({k}) must be <= n ({n})")
            out[str(camera_id)] = override
        return out

    @field_validator("zones", mode="before")
    @classmethod
    def _zones_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for camera_id, raw in value.items():
            try:
                validate_camera_id(str(camera_id))
            except WireError as exc:
                raise _problem(f"zones: {exc.detail}") from None
            try:
                out[str(camera_id)] = (
                    raw if isinstance(raw, ZoneSpec) else ZoneSpec.model_validate(raw)
                )
            except ValidationError as exc:
                raise _problem(f"zones[{camera_id}]: " + zone_problems(exc)) from None
        return out

    @field_validator("api_token")
    @classmethod
    def _token(cls, token: str) -> str:
        if token and (len(token) < 8 or not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", token)):
            raise _problem("api_token must be at least 8 characters of A-Z a-z 0-9 . _ ~ + / = -")
        return token

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise _problem(
                    f"trusted_proxies: {item!r} is not an IP address or network"
                ) from None
        return value

    @model_validator(mode="after")
    def _open_bind_needs_a_token(self) -> AlertSettings:
        if not self.api_token and not self.allow_anonymous_read and not is_loopback(self.host):
            raise _problem(
                f"host {self.host!r} is not a loopback address and no API token is set: the "
                "dashboard shows face snapshots. Set FACEMASK_ALERTS_API_TOKEN (e.g. "
                "`openssl rand -hex 24`), or FACEMASK_ALERTS_ALLOW_ANONYMOUS_READ=true for a "
                "read-only kiosk, or bind FACEMASK_ALERTS_HOST=127.0.0.1"
            )
        return self

    @property
    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        """The parsed ``trusted_proxies``."""
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.trusted_proxies.split(",")
            if p.strip()
        )

    @field_validator("webhook_url", "slack_webhook_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        if value and not urlsplit(value).netloc:
            raise ValueError(f"{value!r} has no host")
        return value.rstrip("/") if value and value.endswith("/") else value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{value!r}: expected mqtt://host[:port] or mqtts://host[:port]")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        if any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            raise ValueError("mqtt_topic_prefix must not contain + or # or start/end with /")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_needed(cls, secret: str, info: ValidationInfo) -> str:
        if info.data.get("webhook_url") and not secret:
            raise _problem(
                "webhook_url is set but webhook_secret is empty: the webhook sink signs every "
                "request (set FACEMASK_ALERTS_WEBHOOK_SECRET)"
            )
        return secret

    @field_validator("retry_max")
    @classmethod
    def _retry_cap(cls, cap: float, info: ValidationInfo) -> float:
        initial = info.data.get("retry_initial")
        if initial is not None and cap < initial:
            raise _problem(f"retry_max ({cap}) must be >= retry_initial ({initial})")
        return cap

    @property
    def mqtt_client(self) -> str:
        """The MQTT client id."""
        return self.mqtt_client_id or self.consumer_name

    def describe(self) -> str:
        """Effective settings; tokens, secrets and credentials in URLs masked."""
        lines = []
        for line in super().describe().splitlines():
            name, _, value = line.partition("=")
            if value and name.endswith(("SLACK_WEBHOOK_URL", "WEBHOOK_URL")) and "://" in value:
                parts = urlsplit(value)
                value = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/***"
            elif value and name.endswith("MQTT_URL") and "@" in value:
                parts = urlsplit(value)
                value = f"{parts.scheme}://***@{parts.netloc.rpartition('@')[2]}"
            lines.append(f"{name}={value}")
        return "\n".join(lines)
