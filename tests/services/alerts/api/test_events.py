"""The live feed: the SSE format (the same alert JSON as the history, byte for byte what
the first release sent), replay after Last-Event-ID, live events without duplicates,
heartbeats, the end of the stream, and the route's parameters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.alerts.api import events
from services.alerts.api.events import event_stream, sse_event
from services.alerts.hub import AlertHub
from services.alerts.records import AlertRecord
from services.alerts.store import AlertStore
from tests.services.alerts.api.conftest import NOW, Api
from tests.services.alerts.test_store import record


def old_alert_json(alert: AlertRecord) -> dict[str, object]:
    """The first release's ``AlertService.alert_json`` (what its feed and API sent), with the
    fields added since at the end."""
    doc = alert.to_json()
    base = f"/api/alerts/{alert.alert_id}"
    doc["snapshot_url"] = f"{base}/snapshot.jpg" if alert.snapshot else None
    doc["thumbnail_url"] = f"{base}/thumbnail.jpg" if alert.thumbnail else None
    # issue 14, after the first release's fields: the clean frame and the (new) review
    doc["frame_url"] = f"{base}/frame.jpg" if alert.frame else None
    doc["review"] = {"state": "new", "by": None, "at": None, "note": "", "label": None}
    return doc


RULE = {"k": 5, "n": 8, "min_score": 0.6, "min_face": 24, "cooldown": 30.0}


@pytest.mark.parametrize(
    "alert",
    [
        replace(record("a" * 32), seq=3),
        replace(record("b" * 32), seq=4, rule=RULE, snapshot="d/b.jpg", thumbnail="d/b.t.jpg"),
        replace(record("c" * 32, ts=NOW + 0.125), seq=5, score=0.987654321, camera_name="Ü"),
    ],
)
def test_an_event_is_the_alert_json_of_the_first_release(alert: AlertRecord) -> None:
    data = json.dumps(old_alert_json(alert), separators=(",", ":"))
    assert sse_event(alert) == f"id: {alert.seq}\nevent: alert\ndata: {data}\n\n"


async def collect(stream: AsyncIterator[str], count: int) -> list[str]:
    out = []
    async for chunk in stream:
        out.append(chunk)
        if len(out) == count:
            break
    return out


def stored_alerts(store: AlertStore, count: int) -> list[AlertRecord]:
    return store.commit_batch(
        [record(f"{i:032x}", ts=NOW + i) for i in range(count)], [], {}, {}, now=NOW
    )


def ids(chunks: list[str]) -> list[int]:
    return [int(c.split("\n")[0][4:]) for c in chunks if c.startswith("id: ")]


def test_replay_after_the_resume_point_then_live_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "REPLAY_PAGE", 2)  # several pages
    store = AlertStore(str(tmp_path))
    alerts = stored_alerts(store, 5)
    hub = AlertHub()

    async def scenario() -> list[str]:
        stream = event_stream(hub, store, 1, heartbeat=5.0)
        head = await collect(stream, 6)  # retry, 4 replayed, connected
        assert hub.count() == 1
        hub.publish(alerts[3])  # already replayed: skipped
        late = replace(record("f" * 32), seq=6)
        hub.publish(late)
        hub.publish(None)  # the service stops
        tail = [chunk async for chunk in stream]
        return head + tail

    chunks = asyncio.run(scenario())
    assert chunks[0] == "retry: 2000\n\n" and chunks[5] == ": connected\n\n"
    assert ids(chunks) == [2, 3, 4, 5, 6]
    assert chunks[1] == sse_event(alerts[1])
    assert hub.count() == 0  # unsubscribed when the stream ended


def test_without_a_resume_point_the_stream_starts_now(tmp_path: Path) -> None:
    store = AlertStore(str(tmp_path))
    alerts = stored_alerts(store, 2)
    hub = AlertHub()

    async def scenario() -> list[str]:
        stream = event_stream(hub, store, None, heartbeat=5.0)
        head = await collect(stream, 2)
        hub.publish(alerts[0])
        hub.close()
        return head + [chunk async for chunk in stream]

    assert asyncio.run(scenario()) == [
        "retry: 2000\n\n",
        ": connected\n\n",
        sse_event(alerts[0]),
    ]


def test_a_quiet_stream_sends_heartbeats(tmp_path: Path) -> None:
    store = AlertStore(str(tmp_path))

    async def scenario() -> list[str]:
        return await collect(event_stream(AlertHub(), store, None, heartbeat=0.01), 4)

    assert asyncio.run(scenario())[2:] == [": ping\n\n", ": ping\n\n"]


def test_the_route_reads_last_event_id(api: Api) -> None:
    bad = api.client.get("/api/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["message"]
    negative = api.client.get("/api/events?last_event_id=-1")
    assert negative.status_code == 422 and "last_event_id" in negative.json()["message"]
    api.hub.close()  # a closed hub ends new streams at once
    api.add_alert("a" * 32)
    with api.client.stream("GET", "/api/events", headers={"Last-Event-ID": "0"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = "".join(response.iter_text())
    assert text.startswith("retry: 2000\n\nid: 1\nevent: alert\n")
    assert text.endswith(": connected\n\n")
