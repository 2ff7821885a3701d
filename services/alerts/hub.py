"""Fan-out of new alerts and review changes to the open server-sent event streams.

The consumer thread publishes stored alerts (:class:`~services.alerts.records.AlertRecord`,
rendered by the events route), the review route each changed review
(:class:`ReviewChange`); each SSE client owns an ``asyncio.Queue``
on the HTTP server's event loop, filled with ``call_soon_threadsafe``. A client that
falls more than ``maxsize`` alerts behind is disconnected (``None`` in its queue); its
browser reconnects with ``Last-Event-ID`` and the API replays the missed alerts from the
database, so no alert is lost and a slow client never holds anything up. Review changes
are not replayed: the history (``/api/alerts``) holds every alert's current review.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from services.alerts.records import AlertRecord

# --- review (issue 14) ---


@dataclass(frozen=True, slots=True)
class ReviewChange:
    """An alert whose review changed (the ``review`` event), as stored now."""

    alert: AlertRecord


# --- end review ---

Event = AlertRecord | ReviewChange


@dataclass(eq=False)
class Subscriber:
    """One SSE client."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(256))
    closed: bool = False


class AlertHub:
    """Thread-safe publisher of alert events to asyncio subscribers."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self) -> Subscriber:
        """A new subscriber on the running event loop."""
        sub = Subscriber(asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                sub.closed = True
                sub.queue.put_nowait(None)
            else:
                self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber (its stream ended)."""
        with self._lock:
            self._subs.discard(sub)

    def count(self) -> int:
        """Open subscribers."""
        with self._lock:
            return len(self._subs)

    @staticmethod
    def _put(sub: Subscriber, event: Event | None) -> None:
        if sub.closed:
            return
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            sub.closed = True
            # Make room for the end marker: the client reconnects and replays.
            with contextlib.suppress(asyncio.QueueEmpty):
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        if event is None:
            sub.closed = True

    def publish(self, event: Event | None) -> None:
        """Send an event (None: end of stream) to every subscriber, from any thread."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # loop already closed
                sub.loop.call_soon_threadsafe(self._put, sub, event)

    def close(self) -> None:
        """End every stream (service shutdown)."""
        with self._lock:
            self._closed = True
        self.publish(None)
