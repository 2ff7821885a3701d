"""The live feed: server-sent events, one ``alert`` event per new alert and one ``review``
event per review change.

The stream starts with ``retry: 2000``; with a resume point (``Last-Event-ID`` or
``?last_event_id``) it first replays the stored alerts after it, then says ``: connected``
and passes on what the :class:`~services.alerts.hub.AlertHub` publishes, with a
``: ping`` comment every ``sse_heartbeat`` seconds. Each event's id is the alert's ``seq``
and its data the alert as ``/api/alerts`` shows it (:class:`~services.alerts.api.models.
AlertOut`). A ``review`` event carries the reviewed alert (the same document, its
``review`` changed) and no id, so the resume point stays the last alert's seq; review
events are not replayed on resume (the history holds every current review).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.alerts.api.deps import Hub, Settings, Store
from services.alerts.api.models import AlertOut, problems
from services.alerts.hub import AlertHub, ReviewChange
from services.alerts.records import AlertRecord
from services.alerts.store import MAX_SEQ, AlertStore

REPLAY_PAGE = 200
MAX_SEQ_DIGITS = len(str(MAX_SEQ))


def parse_last_event_id(raw: str) -> int:
    """A ``Last-Event-ID`` header: an alert seq, 0..2**63-1 in ASCII digits; HTTP 400 with
    a clear message otherwise (a stream is never opened with a resume point it cannot
    replay from)."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > MAX_SEQ_DIGITS:
        raise HTTPException(
            400, f"Last-Event-ID must be an alert seq (an integer 0..{MAX_SEQ}), got {raw[:32]!r}"
        )
    value = int(text)
    if value > MAX_SEQ:
        raise HTTPException(400, f"Last-Event-ID must be at most {MAX_SEQ}")
    return value


router = APIRouter(tags=["alerts"])


def _data(record: AlertRecord) -> str:
    return json.dumps(AlertOut.of(record).model_dump(mode="json"), separators=(",", ":"))


def sse_event(record: AlertRecord) -> str:
    """One ``alert`` event."""
    return f"id: {record.seq}\nevent: alert\ndata: {_data(record)}\n\n"


def review_event(change: ReviewChange) -> str:
    """One ``review`` event (no id: the resume point stays with the alerts)."""
    return f"event: review\ndata: {_data(change.alert)}\n\n"


async def event_stream(
    hub: AlertHub, store: AlertStore, resume: int | None, heartbeat: float
) -> AsyncIterator[str]:
    """The event stream of one client (see the module docstring)."""
    sub = hub.subscribe()
    try:
        yield "retry: 2000\n\n"
        # Without a resume point the stream starts now: pass on whatever arrives. With one,
        # replay from the database first and skip queued events the replay already sent.
        seen = resume or 0
        if resume is not None:
            while True:
                missed = await run_in_threadpool(store.alerts_after, seen, REPLAY_PAGE)
                for record in missed:
                    yield sse_event(record)
                    seen = record.seq
                if len(missed) < REPLAY_PAGE:
                    break
        yield ": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=heartbeat)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if event is None:
                return
            if isinstance(event, ReviewChange):
                yield review_event(event)
                continue
            if event.seq <= seen:
                continue
            seen = event.seq
            yield sse_event(event)
    finally:
        hub.unsubscribe(sub)


@router.get(
    "/api/events",
    summary="Server-sent events: one 'alert' event per new alert, one 'review' event per "
    "review change",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/AlertOut"}}},
            "description": "id: the alert's seq, event: alert, data: the alert (AlertOut); "
            "event: review (no id), data: the reviewed alert (AlertOut)",
        },
        **problems(400, 422),
    },
)
async def events(
    request: Request,
    hub: Hub,
    store: Store,
    settings: Settings,
    last_event_id: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="resume after this alert seq")
    ] = None,
) -> StreamingResponse:
    header = request.headers.get("last-event-id")
    resume = last_event_id
    if header:
        resume = parse_last_event_id(header)
    return StreamingResponse(
        event_stream(hub, store, resume, settings.sse_heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
