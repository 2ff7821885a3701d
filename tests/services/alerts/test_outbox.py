"""Outbox workers: each outcome of a delivery, backoff with jitter, expiry, wake-up.

Time is an injected clock: the store's rows are committed at ``T0`` and the worker's
clock is set by the test, so every delay below is exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facemask.dev.waiting import wait_until
from services.alerts.metrics import AlertMetrics
from services.alerts.outbox import OutboxWorker, backoff_delay
from services.alerts.records import AlertRecord
from services.alerts.sinks import PermanentSinkError, SinkError
from services.alerts.store import DELIVERED, EXPIRED, FAILED, PENDING, AlertStore
from tests.services.alerts.test_store import record

T0 = 1000.0


class FlakySink:
    """A sink that fails a set number of times, then succeeds (test double of a receiver)."""

    name = "flaky"

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or SinkError("HTTP 503")
        self.delivered: list[str] = []
        self.received: list[AlertRecord] = []
        self.attempts = 0

    def deliver(self, alert: AlertRecord) -> None:
        self.attempts += 1
        self.received.append(alert)
        if self.attempts <= self.failures:
            raise self.error
        self.delivered.append(alert.alert_id)


class Clock:
    """A settable clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(metrics: AlertMetrics, outcome: str) -> float:
    labels = {"sink": "flaky", "outcome": outcome}
    return metrics.registry.get_sample_value("facemask_sink_deliveries_total", labels) or 0.0


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 30.0, rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        base = min(30.0, 2.0 ** (n - 1))
        assert base / 2 <= delay <= base
    assert len({round(backoff_delay(3, 1.0, 30.0, rng), 6) for _ in range(20)}) > 10


@pytest.mark.parametrize(
    ("attempts", "initial", "cap", "base"),
    [
        (1, 1.0, 30.0, 1.0),
        (2, 1.0, 30.0, 2.0),
        (5, 1.0, 30.0, 16.0),
        (6, 1.0, 30.0, 30.0),  # 32 capped
        (0, 0.5, 30.0, 0.5),  # "no failure yet" counts as the first
        (1000, 1.0, 7.0, 7.0),  # no overflow for huge counts
    ],
)
def test_backoff_bounds(attempts: int, initial: float, cap: float, base: float) -> None:
    class Edge(random.Random):
        def __init__(self, pick: str) -> None:
            super().__init__()
            self.pick = pick

        def uniform(self, a: float, b: float) -> float:
            return a if self.pick == "low" else b

    assert backoff_delay(attempts, initial, cap, Edge("low")) == base / 2
    assert backoff_delay(attempts, initial, cap, Edge("high")) == base


@dataclass(frozen=True)
class Case:
    """One delivery attempt and what it must leave behind."""

    error: Exception | None
    at: float  # clock of the attempt
    outcome: str
    status: str
    attempts: int
    last_error: str
    next_attempt: tuple[float, float] | None = None  # bounds, while pending
    sink_called: bool = True


OUTCOMES = {
    "delivered": Case(None, T0 + 2.0, "delivered", DELIVERED, 1, ""),
    # first retry: initial * 2**0 = 4 s, half of it jittered
    "retry": Case(SinkError("HTTP 503"), T0, "retry", PENDING, 1, "HTTP 503", (T0 + 2, T0 + 4)),
    "retry-after longer than the backoff": Case(
        SinkError("HTTP 429", retry_after=100.0),
        T0,
        "retry",
        PENDING,
        1,
        "HTTP 429",
        (T0 + 100, T0 + 100),
    ),
    "retry-after shorter than the backoff": Case(
        SinkError("HTTP 429", retry_after=0.5),
        T0,
        "retry",
        PENDING,
        1,
        "HTTP 429",
        (T0 + 2, T0 + 4),
    ),
    "error without a message": Case(
        ConnectionResetError(), T0, "retry", PENDING, 1, "ConnectionResetError", (T0 + 2, T0 + 4)
    ),
    "rejected": Case(PermanentSinkError("HTTP 400"), T0, "rejected", FAILED, 1, "HTTP 400"),
    "expired": Case(None, T0 + 60.001, "expired", EXPIRED, 0, "", sink_called=False),
    "not yet expired": Case(None, T0 + 60.0, "delivered", DELIVERED, 1, ""),
}


@pytest.mark.parametrize("case", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_each_outcome_of_a_delivery(tmp_path: Path, case: Case) -> None:
    store = AlertStore(tmp_path)
    (stored,) = store.commit_batch([record("a" * 32)], ["flaky"], {}, {}, now=T0)
    sink = FlakySink(failures=1 if case.error else 0, error=case.error)
    metrics = AlertMetrics()
    clock = Clock(case.at)
    worker = OutboxWorker(
        store, sink, metrics, ttl=60.0, initial=4.0, cap=30.0, clock=clock, rng=random.Random(3)
    )  # type: ignore[arg-type]
    (row,) = store.due("flaky", clock())

    assert worker.deliver(row) == case.outcome
    (after,) = store.deliveries("a" * 32)
    assert (after.status, after.attempts) == (case.status, case.attempts)
    assert after.last_error == case.last_error
    assert sink.attempts == (1 if case.sink_called else 0)
    if case.sink_called:  # the sink gets the stored record itself
        assert sink.received == [stored]
    if case.next_attempt is None:
        assert after.done_at == case.at and store.outbox_depth() == {}
    else:
        low, high = case.next_attempt
        assert low <= after.next_attempt <= high and after.done_at is None
        assert store.due("flaky", after.next_attempt - 0.001) == []
        assert [d.row_id for d in store.due("flaky", after.next_attempt)] == [row.row_id]
    assert sample(metrics, case.outcome) == 1
    latency = metrics.registry.get_sample_value(
        "facemask_sink_delivery_latency_seconds_sum", {"sink": "flaky"}
    )
    assert latency == (case.at - T0 if case.outcome == "delivered" else None)


def test_run_once_takes_due_rows_oldest_first(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.commit_batch([record("a" * 32, ts=1.0)], ["flaky", "other"], {}, {}, now=T0)
    store.commit_batch([record("b" * 32, ts=2.0)], ["flaky"], {}, {}, now=T0 + 5)
    sink = FlakySink(failures=0)
    clock = Clock(T0 + 1)
    worker = OutboxWorker(store, sink, AlertMetrics(), ttl=60, initial=1, cap=2, clock=clock)  # type: ignore[arg-type]
    assert worker.run_once() and sink.delivered == ["a" * 32]
    assert not worker.run_once()  # "b" is not due yet; "other" is another worker's
    assert store.next_due("flaky") == T0 + 5
    clock.now = T0 + 5
    assert worker.run_once() and sink.delivered == ["a" * 32, "b" * 32]
    assert store.next_due("flaky") is None and store.outbox_depth() == {"other": 1}


def test_outbox_worker_retries_until_delivered(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.commit_batch([record("a" * 32)], ["flaky"], {}, {})
    sink = FlakySink(failures=3)
    metrics = AlertMetrics()
    worker = OutboxWorker(store, sink, metrics, ttl=60, initial=0.05, cap=0.2)  # type: ignore[arg-type]
    worker.start()
    try:
        wait_until(lambda: sink.delivered, 5, "delivery after retries")
    finally:
        worker.stop()
    assert not worker.alive()
    assert sink.delivered == ["a" * 32] and sink.attempts == 4
    (row,) = store.deliveries("a" * 32)
    assert row.status == DELIVERED and row.attempts == 4
    assert sample(metrics, "retry") == 3 and sample(metrics, "delivered") == 1


def test_a_woken_worker_delivers_new_rows_at_once(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    sink = FlakySink(failures=0)
    worker = OutboxWorker(store, sink, AlertMetrics(), ttl=60, initial=1, cap=2)  # type: ignore[arg-type]
    worker.start()
    try:
        store.commit_batch([record("c" * 32)], ["flaky"], {}, {})
        worker.wake()
        # Well under the idle poll (1 s) that would find it without the wake-up.
        wait_until(lambda: sink.delivered, 0.5, "delivery after wake()")
    finally:
        worker.stop()


def test_outbox_worker_rejects_and_expires(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    metrics = AlertMetrics()
    store.commit_batch([record("a" * 32)], ["flaky"], {}, {})
    rejecting = FlakySink(failures=100, error=PermanentSinkError("HTTP 400"))
    worker = OutboxWorker(store, rejecting, metrics, ttl=60, initial=0.05, cap=0.2)  # type: ignore[arg-type]
    assert worker.run_once()
    assert store.deliveries("a" * 32)[0].status == FAILED and rejecting.attempts == 1
    assert not worker.run_once()  # not retried

    clock: list[Any] = [1000.0]
    store.commit_batch([record("b" * 32)], ["flaky"], {}, {}, now=1000.0)
    failing = FlakySink(failures=100)
    worker = OutboxWorker(
        store,
        failing,
        metrics,
        ttl=30,
        initial=1.0,
        cap=4.0,
        clock=lambda: clock[0],  # type: ignore[arg-type]
    )
    while clock[0] < 1040:
        worker.run_once()
        clock[0] += 0.5
    (row,) = store.deliveries("b" * 32)
    assert row.status == EXPIRED
    # Exponential backoff: far fewer attempts than the 60 half-second ticks.
    assert 4 <= failing.attempts <= 12
    assert sample(metrics, "expired") == 1 and sample(metrics, "rejected") == 1
