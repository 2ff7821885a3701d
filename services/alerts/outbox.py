"""Outbox workers: deliver stored alerts to the sinks, retrying until success or expiry.

The consumer writes one outbox row per (alert, sink) in the same transaction as the alert,
so a delivery can only be lost with the database. One worker thread per sink takes the
rows that are due, oldest first, each with its :class:`~services.alerts.records.AlertRecord`
read from the alerts table, and delivers them one by one:

- success: the row is ``delivered`` (outcome ``delivered``);
- :class:`~services.alerts.sinks.PermanentSinkError`: ``failed`` for good (``rejected``);
- any other error: the row is retried after ``initial * 2**attempts`` seconds, capped at
  ``cap``, with "equal jitter" (half fixed, half random; a
  :class:`~facemask.infra.backoff.Backoff`) so many rows - or many services - that failed
  together do not retry in lock-step; a ``Retry-After`` is honoured (outcome ``retry``);
- still undelivered ``ttl`` seconds after the alert: ``expired`` (outcome ``expired``).

Deliveries survive restarts (rows are re-read from SQLite), and a failing sink only
delays its own rows: detection processing never waits for a sink.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from facemask.infra.backoff import Backoff
from facemask.infra.worker import Worker
from services.alerts.metrics import AlertMetrics
from services.alerts.sinks import PermanentSinkError, Sink, SinkError
from services.alerts.store import EXPIRED, FAILED, AlertStore, Delivery

logger = logging.getLogger(__name__)

IDLE_POLL = 1.0


def retry_backoff(initial: float, cap: float, rng: random.Random | None = None) -> Backoff:
    """The outbox's retry policy: capped doubling with equal jitter (half fixed, half
    random), so rows of one sink that failed together do not retry in lock-step."""
    return Backoff(initial, cap, jitter=0.5, spread="below", rng=rng)


def backoff_delay(
    attempts: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before the next try after ``attempts`` failed ones (>= 1), with jitter."""
    return retry_backoff(initial, cap, rng).delay(attempts)


class OutboxWorker:
    """Delivers one sink's outbox rows (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        sink: Sink,
        metrics: AlertMetrics,
        *,
        ttl: float,
        initial: float,
        cap: float,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.ttl = ttl
        self.clock = clock
        self._backoff = retry_backoff(initial, cap, rng)
        self.handled = 0
        """Deliveries this worker finished with any outcome (a progress watch reads it)."""
        self.worker = Worker(f"outbox-{sink.name}", self._run)

    @property
    def name(self) -> str:
        """The sink's name."""
        return self.sink.name

    def start(self) -> None:
        """Start delivering."""
        self.worker.start()

    def wake(self) -> None:
        """New rows were committed: look at once."""
        self.worker.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the delivery in progress (bounded by the sink's own timeout)."""
        self.worker.stop(timeout)

    def alive(self) -> bool:
        """Whether the thread runs."""
        return self.worker.alive

    def _run(self, worker: Worker) -> None:
        while not worker.stopping:
            try:
                worked = self.run_once()
            except Exception:
                logger.exception("outbox sweep failed", extra={"sink": self.name})
                worked = False
            if worked:
                continue
            wait = IDLE_POLL
            try:
                due = self.store.next_due(self.name)
            except Exception:
                due = None
            if due is not None:
                wait = min(IDLE_POLL, max(0.0, due - self.clock()))
            worker.wait(wait)

    def run_once(self) -> bool:
        """Deliver the rows due now; True when any row was handled."""
        rows = self.store.due(self.name, self.clock(), limit=20)
        for row in rows:
            if self.worker.stopping:
                break
            self.deliver(row)
        return bool(rows)

    def deliver(self, row: Delivery) -> str:
        """Try one row; returns the outcome (delivered, retry, rejected, expired)."""
        now = self.clock()
        if now - row.created > self.ttl:
            self.store.mark_final(row.row_id, EXPIRED, row.last_error, now, attempt=False)
            return self._outcome(row, "expired", row.last_error or "ttl")
        try:
            self.sink.deliver(row.alert)
        except PermanentSinkError as exc:
            self.store.mark_final(row.row_id, FAILED, str(exc), self.clock(), attempt=True)
            return self._outcome(row, "rejected", str(exc))
        except Exception as exc:
            delay = self._backoff.delay(row.attempts + 1)
            after = exc.retry_after if isinstance(exc, SinkError) else None
            if after is not None:
                delay = max(delay, after)
            error = str(exc) or exc.__class__.__name__
            self.store.mark_retry(row.row_id, self.clock() + delay, error)
            return self._outcome(row, "retry", error, delay)
        done = self.clock()
        self.store.mark_delivered(row.row_id, done)
        self.metrics.delivery_seconds.labels(self.name).observe(max(0.0, done - row.created))
        return self._outcome(row, "delivered")

    def _outcome(self, row: Delivery, outcome: str, error: str = "", delay: float = 0.0) -> str:
        self.handled += 1
        self.metrics.deliveries.labels(self.name, outcome).inc()
        extra = {
            "sink": self.name,
            "alert_id": row.alert_id,
            "outcome": outcome,
            "attempts": row.attempts + (outcome != "expired"),
        }
        if outcome == "delivered":
            logger.info("alert delivered", extra=extra)
        elif outcome == "retry":
            level = logging.INFO if row.attempts < 3 else logging.WARNING
            logger.log(
                level,
                "delivery failed; will retry",
                extra={**extra, "error": error, "retry_in_s": round(delay, 2)},
            )
        else:
            logger.warning("delivery given up", extra={**extra, "error": error})
        return outcome
