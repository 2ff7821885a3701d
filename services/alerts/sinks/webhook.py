"""Webhook sink: each alert as a signed JSON POST.

Request::

    POST <FACEMASK_ALERTS_WEBHOOK_URL>
    Content-Type: application/json
    X-Facemask-Event: alert
    X-Facemask-Delivery: <alert id>          same on every retry: deduplicate on it
    X-Facemask-Timestamp: <unix seconds>     when this attempt was signed
    X-Facemask-Signature: sha256=<hex>       HMAC-SHA256(secret, timestamp + "." + body)

    {"event": "alert", "alert": {...}, "snapshot_url": ..., "dashboard_url": ...}

To verify, recompute the HMAC over the timestamp header, a dot and the raw request body
(the exact bytes, before any JSON parsing) with the shared secret, compare in constant
time, and reject timestamps more than a few minutes old (replays)::

    expected = "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, "sha256").hexdigest()
    ok = hmac.compare_digest(expected, signature) and abs(time.time() - int(ts)) < 300

:func:`verify_signature` does exactly that. A 2xx answer is a delivery; 408, 425, 429
and 5xx answers, timeouts and connection errors are retried with exponential backoff
and jitter (``Retry-After`` honoured); other 4xx answers are final failures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from facemask import __version__
from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord
from services.alerts.sinks import (
    PermanentSinkError,
    Sink,
    SinkConfig,
    SinkContext,
    SinkError,
    alert_links,
)

SIGNATURE_HEADER = "X-Facemask-Signature"
TIMESTAMP_HEADER = "X-Facemask-Timestamp"
DELIVERY_HEADER = "X-Facemask-Delivery"
EVENT_HEADER = "X-Facemask-Event"
RETRYABLE_STATUS = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is valid for ``body`` and ``timestamp`` is recent."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds of a ``Retry-After: <seconds>`` header (dates are ignored)."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return min(max(0.0, float(raw)), MAX_RETRY_AFTER)
    except ValueError:
        return None


def check_response(response: httpx.Response) -> None:
    """Raise the right :class:`SinkError` for a non-2xx answer."""
    if 200 <= response.status_code < 300:
        return
    detail = f"HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
        raise SinkError(detail, retry_after=retry_after(response))
    raise PermanentSinkError(detail)


def http_client(timeout: float) -> httpx.Client:
    """The HTTP client of an HTTP sink: bounded timeout, no redirects, our User-Agent."""
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": f"facemask-alerts/{__version__}"},
    )


def post_json(client: httpx.Client, url: str, body: bytes, headers: Mapping[str, str]) -> None:
    """POST ``body``; network errors and timeouts become retryable :class:`SinkError`."""
    try:
        response = client.post(url, content=body, headers=dict(headers))
    except httpx.TimeoutException as exc:
        raise SinkError(f"timeout: {exc.__class__.__name__}") from exc
    except httpx.HTTPError as exc:
        raise SinkError(f"{exc.__class__.__name__}: {exc}") from exc
    check_response(response)


class WebhookSink(Sink):
    """Signed JSON POST of each alert."""

    name: ClassVar[str] = "webhook"

    def __init__(self, url: str, secret: str, *, timeout: float, base_url: str) -> None:
        self.url = url
        self.secret = secret
        self.base_url = base_url
        self.client = http_client(timeout)

    def body(self, alert: AlertRecord) -> bytes:
        """The request body of an alert."""
        doc: dict[str, Any] = {"event": "alert", "alert": alert.to_json()}
        doc.update(alert_links(alert, self.base_url))
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def deliver(self, alert: AlertRecord) -> None:
        body = self.body(alert)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: "alert",
            DELIVERY_HEADER: alert.alert_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        post_json(self.client, self.url, body, headers)

    def close(self) -> None:
        self.client.close()


class WebhookConfig(SinkConfig):
    """Options of the ``webhook`` sink."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(min_length=1, description="endpoint")
    secret: str = Field(description="HMAC-SHA256 key of the signature header")
    timeout: float = Field(gt=0.0, description="seconds per request")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> WebhookConfig | None:
        if not settings.webhook_url:
            return None
        return cls(
            url=settings.webhook_url,
            secret=settings.webhook_secret,
            timeout=settings.webhook_timeout,
        )

    def create(self, context: SinkContext) -> WebhookSink:
        return WebhookSink(
            self.url, self.secret, timeout=self.timeout, base_url=context.public_base_url
        )
