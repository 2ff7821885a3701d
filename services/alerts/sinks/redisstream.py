"""Redis sink: alerts on the alerts stream (``StreamLayout.alerts``), exactly once.

Each alert is ``XADD``-ed as :class:`facemask.contracts.wire.AlertEvent` fields
(:meth:`~services.alerts.records.AlertRecord.to_event`, ``MAXLEN ~``); the ingest nodes'
voice prompt (:mod:`services.ingest.voice`) reads that stream. A Lua script
adds the alert id to a sorted set ``{<alerts key>}:delivered`` (same hash slot as the
stream) and ``XADD``-s only when the id was new, so a delivery retried after a crash or a
lost reply never puts the same alert on the stream twice. Ids older than a week (or the
outbox TTL, if longer) are dropped from the set.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient
from services.alerts.config import AlertSettings
from services.alerts.records import AlertRecord
from services.alerts.sinks import Sink, SinkConfig, SinkContext, SinkError

# KEYS[1] stream, KEYS[2] delivered set; ARGV[1] alert id, ARGV[2] now, ARGV[3] keep (s),
# ARGV[4] maxlen, ARGV[5..] fields.
XADD_ONCE = """
local added = redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
if added == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
return added
"""


class RedisStreamSink(Sink):
    """``XADD`` to the alerts stream, deduplicated by alert id."""

    name: ClassVar[str] = "redis"

    def __init__(self, client: RedisClient, stream: str, *, maxlen: int, keep: float) -> None:
        self.client = client
        self.stream = stream
        self.delivered_key = f"{{{stream}}}:delivered"
        self.maxlen = maxlen
        self.keep = keep
        self._script = client.register_script(XADD_ONCE)

    def deliver(self, alert: AlertRecord) -> None:
        args: list[Any] = [alert.alert_id, repr(time.time()), repr(self.keep), self.maxlen]
        for key, value in alert.to_event().to_fields().items():
            args.extend((key, value))
        try:
            self._script(keys=[self.stream, self.delivered_key], args=args)
        except CONNECTION_ERRORS as exc:
            raise SinkError(f"redis unreachable: {exc}") from exc


class RedisStreamConfig(SinkConfig):
    """Options of the ``redis`` sink."""

    type: Literal["redis"] = "redis"
    maxlen: int = Field(ge=1, description="MAXLEN ~ of the alerts stream")
    keep: float = Field(gt=0.0, description="seconds an alert id is remembered (dedup)")

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> RedisStreamConfig | None:
        if not settings.redis_sink:
            return None
        return cls(maxlen=settings.alerts_maxlen, keep=max(7 * 86400.0, settings.outbox_ttl))

    def create(self, context: SinkContext) -> RedisStreamSink:
        return RedisStreamSink(
            context.client, context.layout.alerts, maxlen=self.maxlen, keep=self.keep
        )
