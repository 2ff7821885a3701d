"""Worker: a loop thread with a clean stop, a wake-up, and a death that shows."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from facemask.infra.worker import Worker


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_stop_ends_a_sleeping_loop_at_once() -> None:
    rounds: list[int] = []

    def loop(worker: Worker) -> None:
        while not worker.stopping:
            rounds.append(1)
            worker.wait(60.0)

    worker = Worker("sleeper", loop).start()
    wait_for(lambda: rounds)
    assert worker.alive and worker.started and not worker.stopping
    started = time.monotonic()
    assert worker.stop(5.0)
    assert time.monotonic() - started < 1.0
    assert not worker.alive and not worker.failed and worker.error is None
    assert rounds == [1]


def test_a_loop_that_raises_is_logged_and_visible(caplog: pytest.LogCaptureFixture) -> None:
    def loop(worker: Worker) -> None:
        raise RuntimeError("broken loop")

    with caplog.at_level(logging.ERROR, logger="facemask.infra.worker"):
        worker = Worker("doomed", loop).start()
        assert worker.join(5.0)
    assert worker.failed and not worker.alive
    assert isinstance(worker.error, RuntimeError) and str(worker.error) == "broken loop"
    (record,) = [r for r in caplog.records if r.getMessage() == "worker died"]
    assert record.exc_info is not None and record.__dict__["worker"] == "doomed"


def test_a_loop_that_returns_is_finished_not_failed() -> None:
    worker = Worker("once", lambda w: None).start()
    assert worker.join(5.0)
    assert not worker.alive and not worker.failed


def test_wake_ends_one_wait_early_and_is_consumed() -> None:
    worker = Worker("idle", lambda w: None)
    worker.wake()
    started = time.monotonic()
    assert worker.wait(10.0) is False  # woken, not stopping
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert worker.wait(0.1) is False  # the wake was used up: a full wait
    assert time.monotonic() - started >= 0.09
    worker.request_stop()
    assert worker.wait(10.0) is True and worker.wait(10.0) is True


def test_stop_reports_a_thread_that_does_not_end(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    worker = Worker("stubborn", lambda w: release.wait(10.0)).start()
    with caplog.at_level(logging.WARNING, logger="facemask.infra.worker"):
        assert worker.stop(0.05) is False
    assert worker.alive and "worker did not stop in time" in caplog.text
    release.set()
    assert worker.join(5.0) and not worker.alive


def test_join_and_stop_of_a_worker_never_started() -> None:
    worker = Worker("unused", lambda w: None)
    assert worker.join(0.1) and worker.stop(0.1)
    assert not worker.started and not worker.alive and not worker.failed


@pytest.mark.parametrize(("immediate", "first_tick_before"), [(True, 0.5), (False, None)])
def test_every_runs_ticks_immediately_or_after_one_interval(
    immediate: bool, first_tick_before: float | None
) -> None:
    ticks: list[float] = []
    started = time.monotonic()
    worker = Worker.every(
        "ticker", 0.3, lambda: ticks.append(time.monotonic()), immediate=immediate
    )
    worker.start()
    wait_for(lambda: len(ticks) >= 2)
    assert worker.stop(5.0)
    first = ticks[0] - started
    if first_tick_before is not None:
        assert first < first_tick_before
    else:
        assert first >= 0.29
    assert ticks[1] - ticks[0] >= 0.29


def test_every_keeps_going_after_a_failing_tick(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError(f"tick {len(calls)} failed")

    with caplog.at_level(logging.ERROR, logger="facemask.infra.worker"):
        worker = Worker.every("flaky", 0.01, tick).start()
        wait_for(lambda: len(calls) >= 4)
        assert worker.stop(5.0)
    assert worker.errors == 2 and str(worker.last_error) == "tick 2 failed"
    assert not worker.failed
    assert caplog.text.count("periodic task failed") == 2


def test_wake_runs_the_next_tick_early() -> None:
    ticks: list[int] = []
    worker = Worker.every("poked", 60.0, lambda: ticks.append(1)).start()
    wait_for(lambda: len(ticks) == 1)
    worker.wake()
    wait_for(lambda: len(ticks) == 2, timeout=2.0)
    assert worker.stop(5.0)


def test_restart_runs_the_target_again_after_a_death_only() -> None:
    runs: list[int] = []

    def loop(worker: Worker) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run dies")
        while not worker.stopping:
            worker.wait(0.01)

    worker = Worker("again", loop)
    assert not worker.restart(), "never started: nothing to restart"
    worker.start()
    assert worker.join(5.0) and worker.failed
    assert worker.restart()
    wait_for(lambda: len(runs) == 2)
    assert worker.alive and not worker.failed and worker.restarts == 1
    assert isinstance(worker.last_error, RuntimeError)
    assert not worker.restart(), "running: no second thread"
    assert worker.stop(5.0)
    assert not worker.restart(), "stopped on request: stays stopped"
    assert len(runs) == 2


def test_adopt_workers_hands_every_new_worker_to_the_adopter() -> None:
    from facemask.infra.worker import adopt_workers

    adopted: list[Worker] = []
    with adopt_workers(adopted.append):
        a = Worker("a", lambda w: None)
        b = Worker.every("b", 1.0, lambda: None)
    outside = Worker("c", lambda w: None)
    assert adopted == [a, b] and outside not in adopted
