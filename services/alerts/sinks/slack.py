"""Slack sink: a message per alert through an incoming webhook.

The message names the camera, its place (the registry's ``location``), the capture time
(rendered in each reader's time zone by Slack's ``<!date^...>`` token, with a UTC
fallback) and links to the snapshot and the dashboard, built from
``FACEMASK_ALERTS_PUBLIC_BASE_URL``. Failures are retried like the webhook's.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord
from services.alerts.sinks import Sink, SinkConfig, SinkContext, alert_links
from services.alerts.sinks.webhook import http_client, post_json


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(record: AlertRecord, base_url: str) -> dict[str, Any]:
    """The Slack payload (``text`` fallback plus ``blocks``) of an alert."""
    links = alert_links(record, base_url)
    alert = record.to_json()
    camera = _escape(str(alert.get("camera_name") or alert["camera_id"]))
    place = _escape(str(alert.get("place") or ""))
    ts = float(alert["ts"])
    utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    when = f"<!date^{int(ts)}^{{date_short_pretty}} {{time_secs}}|{utc}>"
    where = f"{camera} ({place})" if place else camera
    snapshot = links["snapshot_url"]
    picture = f"<{snapshot}|View snapshot>" if snapshot else "_no snapshot: frame expired_"
    text = f":warning: Person without a mask: {where} at {utc}"
    if snapshot:
        text += f" - snapshot: {snapshot}"
    fields = [
        {"type": "mrkdwn", "text": f"*Camera*\n{camera}"},
        {"type": "mrkdwn", "text": f"*Place*\n{place or '-'}"},
        {"type": "mrkdwn", "text": f"*Time*\n{when}"},
        {"type": "mrkdwn", "text": f"*Score*\n{float(alert.get('score', 0)):.2f}"},
    ]
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f":warning: *Person without a mask* - {where}"},
            },
            {"type": "section", "fields": fields},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{picture} | <{links['dashboard_url']}|Dashboard>",
                },
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"alert {alert['id']} - track {alert['track_id']}"}
                ],
            },
        ],
    }


class SlackSink(Sink):
    """Slack incoming-webhook messages."""

    name: ClassVar[str] = "slack"

    def __init__(self, url: str, *, timeout: float, base_url: str) -> None:
        self.url = url
        self.base_url = base_url
        self.client = http_client(timeout)

    def deliver(self, alert: AlertRecord) -> None:
        body = json.dumps(slack_message(alert, self.base_url)).encode()
        post_json(self.client, self.url, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        self.client.close()


class SlackConfig(SinkConfig):
    """Options of the ``slack`` sink."""

    type: Literal["slack"] = "slack"
    url: str = Field(min_length=1, description="Slack incoming webhook")
    timeout: float = Field(gt=0.0, description="seconds per request")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> SlackConfig | None:
        if not settings.slack_webhook_url:
            return None
        return cls(url=settings.slack_webhook_url, timeout=settings.slack_timeout)

    def create(self, context: SinkContext) -> SlackSink:
        return SlackSink(self.url, timeout=self.timeout, base_url=context.public_base_url)
