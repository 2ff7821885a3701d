"""Sinks against real receivers (local HTTP server, redis-server, mosquitto)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from facemask.contracts.wire import AlertEvent
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.records import AlertRecord
from services.alerts.sinks import (
    PermanentSinkError,
    SinkContext,
    SinkError,
    build_sinks,
    load_builtin_sinks,
    sink_configs,
    topic_part,
)
from services.alerts.sinks.mqtt import MqttSink
from services.alerts.sinks.redisstream import RedisStreamSink
from services.alerts.sinks.slack import SlackSink, slack_message
from services.alerts.sinks.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    WebhookSink,
    sign,
    verify_signature,
)
from tests.fixtures.mqtt import MosquittoProcess, MqttRecorder
from tests.services.alerts.conftest import LAYOUT, HookServer, fast_settings
from tests.services.alerts.test_store import record

SECRET = "s3cret-key"


def alert_doc(alert_id: str = "a" * 32, camera: str = "lobby") -> AlertRecord:
    return replace(
        record(alert_id, camera, time.time()),
        camera_name="Lobby",
        place="Main hall",
        message="Person without a mask at Lobby",
    )


def test_registry_knows_the_builtin_sinks(tmp_path: Path) -> None:
    assert {"webhook", "slack", "mqtt", "redis"} <= set(load_builtin_sinks())
    settings = fast_settings("redis://127.0.0.1:1/0", tmp_path, redis_sink=False)
    context = SinkContext(redis.Redis(port=1), LAYOUT, "http://dash:8080")
    assert build_sinks(settings, context) == []  # nothing configured, nothing enabled
    settings = fast_settings(
        "redis://127.0.0.1:1/0",
        tmp_path,
        webhook_url="http://127.0.0.1:9/x",
        webhook_secret=SECRET,
        slack_webhook_url="http://127.0.0.1:9/y",
    )
    sinks = build_sinks(settings, context)
    assert [s.name for s in sinks] == ["webhook", "slack", "redis"]  # outbox row order
    assert isinstance(sinks[0], WebhookSink)
    assert sink_configs()["webhook"] is WebhookConfig


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        ("webhook", {"url": "", "secret": "s", "timeout": 1.0}, "url"),
        ("webhook", {"url": "http://x", "secret": "s", "timeout": 0}, "timeout"),
        ("mqtt", {"url": "mqtt://x", "prefix": "", "client_id": "c", "timeout": 1.0}, "prefix"),
        ("redis", {"maxlen": 10, "keep": 1.0, "colour": "red"}, "colour"),
    ],
)
def test_sink_options_are_typed_and_checked(
    config: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sink_configs()[config](**options)


def test_signature_verifies_and_detects_tampering() -> None:
    body = b'{"event":"alert"}'
    ts = str(int(time.time()))
    signature = sign(SECRET, ts, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, ts, body, signature)
    assert not verify_signature("other", ts, body, signature)
    assert not verify_signature(SECRET, ts, body + b" ", signature)
    assert not verify_signature(SECRET, str(int(ts) - 1), body, signature)
    old = str(int(time.time()) - 3600)
    assert not verify_signature(SECRET, old, body, sign(SECRET, old, body))  # replay


def test_webhook_posts_signed_json(hooks: HookServer) -> None:
    sink = WebhookSink(hooks.url + "/hook", SECRET, timeout=2.0, base_url="http://dash:8080")
    alert = alert_doc()
    sink.deliver(alert)
    (req,) = hooks.received("/hook")
    assert verify_signature(
        SECRET, req.headers[TIMESTAMP_HEADER], req.body, req.headers[SIGNATURE_HEADER]
    )
    assert req.headers[DELIVERY_HEADER] == alert.alert_id
    assert req.headers["Content-Type"] == "application/json"
    doc = req.json()
    assert doc["event"] == "alert" and doc["alert"]["camera_id"] == "lobby"
    assert doc["dashboard_url"] == f"http://dash:8080/#alert-{alert.alert_id}"
    assert doc["snapshot_url"] is None  # the record has no snapshot

    hooks.status = 503
    with pytest.raises(SinkError) as retry:
        sink.deliver(alert)
    assert not isinstance(retry.value, PermanentSinkError)
    hooks.status = 400
    with pytest.raises(PermanentSinkError):
        sink.deliver(alert)
    hooks.down()
    with pytest.raises(SinkError):  # connection refused
        sink.deliver(alert)
    sink.close()


def test_slack_message_names_camera_place_time_and_snapshot(hooks: HookServer) -> None:
    alert = replace(alert_doc(), snapshot="x.jpg")
    message = slack_message(alert, "https://dash.example")
    text = json.dumps(message)
    link = f"https://dash.example/api/alerts/{alert.alert_id}/snapshot.jpg"
    assert link in message["text"]
    assert "Lobby" in text and "Main hall" in text and f"<!date^{int(alert.ts)}^" in text
    assert f"<{link}|View snapshot>" in text
    sink = SlackSink(hooks.url + "/slack", timeout=2.0, base_url="https://dash.example")
    sink.deliver(alert)
    (req,) = hooks.received("/slack")
    assert req.json() == message
    sink.close()


def test_redis_sink_adds_each_alert_once(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    sink = RedisStreamSink(redis_client, LAYOUT.alerts, maxlen=100, keep=3600)
    alert = alert_doc()
    sink.deliver(alert)
    sink.deliver(alert)  # a retry after a lost reply: not added twice
    sink.deliver(alert_doc("b" * 32))
    entries = redis_client.xrange(LAYOUT.alerts)
    events = [AlertEvent.from_fields(fields) for _sid, fields in entries]
    assert [e.alert_id for e in events] == ["a" * 32, "b" * 32]
    assert events[0].camera_id == "lobby" and events[0].message.startswith("Person without")
    redis_server.stop()
    with pytest.raises(SinkError):
        sink.deliver(alert_doc("c" * 32))


def test_mqtt_sink_publishes_alerts_and_retained_compliance(
    mosquitto: MosquittoProcess, mqtt_recorder: MqttRecorder
) -> None:
    sink = MqttSink(
        mosquitto.url, prefix="facemask", client_id="alerts-test", timeout=3.0, base_url="http://d"
    )
    with pytest.raises(SinkError):
        sink.deliver(alert_doc())  # not connected yet
    sink.start()
    assert sink.connected.wait(5)
    sink.deliver(alert_doc(camera="hall/2"))
    state = {"camera_id": "hall/2", "compliance": 0.75, "online": True}
    sink.publish_compliance("hall/2", state)
    sink.publish_compliance("hall/2", state)  # unchanged: not re-sent
    wait_until(lambda: mqtt_recorder.on("hall_2/compliance"), 5, "compliance state")
    wait_until(lambda: mqtt_recorder.on("hall_2/alert"), 5, "alert message")
    (msg,) = mqtt_recorder.on("facemask/hall_2/alert")
    assert json.loads(msg.payload)["camera_id"] == "hall/2" and msg.qos == 1
    time.sleep(0.2)
    assert len(mqtt_recorder.on("hall_2/compliance")) == 1
    sink.close()
    assert topic_part("a/b+c#") == "a_b_c_"

    # Retained: a client subscribing later still gets the camera's state.
    import paho.mqtt.client as mqtt

    late: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late")
    client.on_message = lambda _c, _u, m: late.append(m)
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe("facemask/+/compliance", qos=1)
    client.loop_start()
    try:
        wait_until(lambda: late, 5, "retained compliance")
        assert late[0].retain and json.loads(late[0].payload)["compliance"] == 0.75
    finally:
        client.disconnect()
        client.loop_stop()
