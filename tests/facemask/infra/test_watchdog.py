"""Supervisor: restarts of dead loops with back-off, the fatal verdict, stall detection and
recovery on an injected clock, conditions, and a real stream consumer whose handler blocks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra.consumer import Delivery, GroupOptions, StreamGroupConsumer
from facemask.infra.redisconn import connect
from facemask.infra.watchdog import (
    EXIT_UNHEALTHY,
    RestartPolicy,
    SupervisionSettings,
    Supervisor,
    SupervisorMetrics,
)
from facemask.infra.worker import Worker


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def make(clock: Clock, **kwargs: Any) -> tuple[Supervisor, CollectorRegistry]:
    registry = CollectorRegistry()
    options: dict[str, Any] = {"stall_timeout": 10.0, "restart_limit": 2}
    options.update(kwargs)
    sup = Supervisor("test", metrics=SupervisorMetrics("test", registry), clock=clock, **options)
    return sup, registry


class Dying:
    """A loop target that raises each time ``die`` is set, else idles until stopped."""

    def __init__(self) -> None:
        self.runs = 0
        self.die = threading.Event()

    def __call__(self, worker: Worker) -> None:
        self.runs += 1
        while not worker.stopping:
            if self.die.is_set():
                raise RuntimeError(f"boom {self.runs}")
            worker.wait(0.01)


@pytest.fixture()
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.stop(2.0)


def test_a_dead_loop_is_restarted_after_its_backoff(workers: list[Worker]) -> None:
    clock = Clock()
    sup, registry = make(clock)
    target = Dying()
    with sup.adopting(RestartPolicy(backoff_initial=2.0, backoff_max=8.0)):
        worker = Worker("loop", target)
    workers.append(worker)
    assert sup.loops() == ["loop"]
    changes: list[bool] = []
    sup.on_ready(changes.append)
    worker.start()
    assert sup.check() and changes == [True]
    target.die.set()
    assert worker.join(5.0) and worker.failed
    assert not sup.check(), "a dead loop makes the service not ready"
    assert sup.problems() == {"loop": "dead, restarting"}
    assert sample(registry, "facemask_test_loop_deaths_total", loop="loop") == 1
    clock.now += 1.9  # the back-off (2 s) is not over: no restart yet
    assert not sup.check() and not worker.alive and worker.restarts == 0
    target.die.clear()
    clock.now += 0.2
    sup.check()
    assert worker.restarts == 1 and worker.alive and not worker.failed
    assert isinstance(worker.last_error, RuntimeError)
    assert sup.check() and changes == [True, False, True]
    assert sample(registry, "facemask_test_loop_restarts_total", loop="loop") == 1
    assert target.runs == 2
    assert not sup.fatal.is_set()


def test_too_many_deaths_is_a_fatal_verdict(
    workers: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sup, _ = make(clock, restart_limit=2, restart_window=100.0)
    reasons: list[str] = []
    sup.on_fatal(reasons.append)
    target = Dying()
    target.die.set()
    worker = sup.adopt(Worker("flaky", target), RestartPolicy(backoff_initial=1.0))
    workers.append(worker)
    worker.start()
    with caplog.at_level(logging.INFO, logger="facemask.infra.watchdog"):
        for restarts in (1, 2):
            assert worker.join(5.0)
            sup.check()  # death noticed, restart planned
            clock.now += 10.0
            sup.check()  # restarted (and dies again at once)
            assert worker.restarts == restarts
        assert worker.join(5.0)
        sup.check()  # the third death within the window: give up
    assert sup.fatal.is_set() and not sup.ready
    assert sup.verdict is not None and "flaky died 3 times" in sup.verdict
    assert reasons == [sup.verdict]
    assert worker.restarts == 2 and not worker.alive
    verdicts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(verdicts) == 1 and verdicts[0].__dict__["exit_code"] == EXIT_UNHEALTHY == 70
    clock.now += 100.0
    sup.check()
    assert worker.restarts == 2 and not sup.ready, "a verdict is final"


def test_deaths_outside_the_window_do_not_add_up(workers: list[Worker]) -> None:
    clock = Clock()
    sup, _ = make(clock, restart_limit=1, restart_window=60.0)
    target = Dying()
    worker = sup.adopt(Worker("rare", target), RestartPolicy(backoff_initial=1.0))
    workers.append(worker)
    worker.start()
    for _ in range(3):
        target.die.set()
        assert worker.join(5.0)
        sup.check()
        target.die.clear()
        clock.now += 61.0
        sup.check()
        assert worker.alive
    assert worker.restarts == 3 and not sup.fatal.is_set() and sup.check()


def test_a_loop_that_may_finish_is_no_death_but_a_return_is_otherwise(
    workers: list[Worker],
) -> None:
    clock = Clock()
    sup, registry = make(clock, restart_limit=0)
    ended = sup.adopt(Worker("file-camera", lambda w: None), RestartPolicy(may_finish=True))
    ended.start()
    workers.append(ended)
    assert ended.join(5.0)
    assert sup.check() and not sup.fatal.is_set()
    returned = sup.adopt(Worker("publisher", lambda w: None))
    workers.append(returned)
    returned.start()
    assert returned.join(5.0)
    sup.check()
    assert sup.fatal.is_set() and sup.verdict is not None and "returned" in sup.verdict
    assert sample(registry, "facemask_test_loop_deaths_total", loop="publisher") == 1


def test_stopping_loops_and_loops_not_started_are_not_deaths(workers: list[Worker]) -> None:
    clock = Clock()
    sup, _ = make(clock, restart_limit=0)
    later = sup.adopt(Worker("later", Dying()))
    stopped = sup.adopt(Worker("stopped", Dying())).start()
    workers.extend([later, stopped])
    assert stopped.stop(2.0)
    assert sup.check() and not sup.fatal.is_set()


def test_a_plain_thread_that_ends_is_fatal() -> None:
    clock = Clock()
    sup, _ = make(clock)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    sup.watch_thread("http", thread.is_alive)
    assert sup.check(), "not started yet: nothing to say"
    thread.start()
    assert sup.check()
    release.set()
    thread.join(5.0)
    assert not sup.check() and sup.verdict is not None and "http ended" in sup.verdict


class Work:
    """Counters of a fake work queue."""

    def __init__(self) -> None:
        self.done = 0
        self.pending = 0
        self.taken = 0


def test_stall_detected_at_the_timeout_logged_once_and_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sup, registry = make(clock, stall_timeout=10.0)
    work = Work()
    sup.watch_progress(
        "frames", done=lambda: work.done, pending=lambda: work.pending, taken=lambda: work.taken
    )
    changes: list[bool] = []
    sup.on_ready(changes.append)
    with caplog.at_level(logging.INFO, logger="facemask.infra.watchdog"):
        assert sup.check()
        work.pending = 3
        clock.now += 9.9
        assert sup.check(), "not yet: 9.9 s without progress"
        clock.now += 0.1
        assert not sup.check()
        assert sup.stalled() == ["frames"] and sup.problems() == {"frames": "stalled"}
        for _ in range(5):
            clock.now += 1.0
            assert not sup.check()
        assert sample(registry, "facemask_test_stalls_total", watch="frames") == 1
        assert sample(registry, "facemask_test_stalled", watch="frames") == 1
        work.done += 1  # progress: ready again by itself
        clock.now += 1.0
        assert sup.check() and sup.stalled() == []
    assert sample(registry, "facemask_test_stalled", watch="frames") == 0
    assert changes == [True, False, True]
    starts = [r for r in caplog.records if r.getMessage().startswith("stall:")]
    ends = [r for r in caplog.records if r.getMessage() == "stall ended"]
    assert len(starts) == 1 and len(ends) == 1
    assert starts[0].__dict__["pending"] == 3 and ends[0].__dict__["stalled_s"] == 6.0


def test_idle_is_never_a_stall() -> None:
    clock = Clock()
    sup, registry = make(clock, stall_timeout=10.0)
    work = Work()
    sup.watch_progress("frames", done=lambda: work.done, pending=lambda: work.pending)
    for _ in range(100):
        clock.now += 5.0
        assert sup.check()
    # Work arrives after a long idle time: the stall clock starts from the idle check.
    work.pending = 1
    clock.now += 5.0
    assert sup.check()
    work.done, work.pending = 1, 0
    clock.now += 50.0
    assert sup.check()
    assert sample(registry, "facemask_test_stalls_total", watch="frames") == 0


def test_entries_taken_again_and_again_without_finishing_are_a_stall() -> None:
    """A poison batch re-read forever: nothing in flight, but taken grows and done not."""
    clock = Clock()
    sup, _ = make(clock, stall_timeout=10.0)
    work = Work()
    sup.watch_progress("detections", done=lambda: work.done, taken=lambda: work.taken)
    work.taken, work.done = 5, 5
    assert sup.check()
    for _ in range(12):
        work.taken += 5
        clock.now += 1.0
        sup.check()
    assert sup.stalled() == ["detections"] and not sup.ready
    # It finally goes through; later idle time with taken > done is no stall.
    work.done += 5
    clock.now += 1.0
    assert sup.check()
    clock.now += 100.0
    assert sup.check()


def test_a_stall_that_does_not_affect_readiness_is_still_reported() -> None:
    clock = Clock()
    sup, registry = make(clock)
    sup.watch_progress("outbox-webhook", done=lambda: 0, pending=lambda: 1, readiness=False)
    sup.check()
    clock.now += 11.0
    assert sup.check() and sup.stalled() == ["outbox-webhook"]
    assert sample(registry, "facemask_test_stalled", watch="outbox-webhook") == 1


def test_conditions_and_stall_exit() -> None:
    clock = Clock()
    sup, _ = make(clock, stall_timeout=5.0, stall_exit=30.0)
    redis_ok = [False]

    def boom() -> bool:
        raise RuntimeError("probe broke")

    sup.require("redis", lambda: redis_ok[0])
    sup.watch_progress("frames", done=lambda: 0, pending=lambda: 1)
    assert not sup.check() and sup.problems() == {"redis": "false"}
    clock.now += 60.0
    assert not sup.check() and not sup.fatal.is_set(), "waiting for Redis is no verdict"
    redis_ok[0] = True
    clock.now += 1.0
    sup.check()
    assert sup.fatal.is_set() and sup.verdict is not None and "no progress" in sup.verdict
    other, _ = make(clock)
    other.require("broken", boom)
    assert not other.check() and other.problems() == {"broken": "false"}


def test_settings_configure_the_supervisor() -> None:
    settings = SupervisionSettings(stall_timeout=3.0, restart_limit=7, watchdog_interval=0.5)
    sup = Supervisor.from_settings("svc", settings)
    assert (sup.stall_timeout, sup.restart_limit, sup.interval) == (3.0, 7, 0.5)
    with pytest.raises(ValueError):
        SupervisionSettings(stall_timeout=0)


def test_the_supervisor_thread_checks_by_itself(workers: list[Worker]) -> None:
    sup, _ = make(Clock(), interval=0.01)
    target = Dying()
    worker = sup.adopt(Worker("loop", target), RestartPolicy(backoff_initial=0.01))
    workers.append(worker)
    worker.start()
    sup.start()
    try:
        target.die.set()
        wait_until(lambda: worker.failed, 5.0, "death")
        target.die.clear()
        # The injected clock stands still: the planned restart waits for it.
        sup.clock.now += 1.0  # type: ignore[attr-defined]
        wait_until(lambda: worker.restarts == 1 and worker.alive, 5.0, "restart")
    finally:
        sup.stop()


# -- a real stream consumer whose handler blocks -----------------------------------------


@pytest.fixture()
def client(redis_server: RedisProcess) -> Iterator[Any]:
    c = connect(redis_server.url, socket_timeout=2.0, connect_timeout=0.5)
    try:
        yield c
    finally:
        c.close()


def test_a_blocked_stream_handler_makes_readiness_false_then_true(client: Any) -> None:
    clock = Clock()
    sup, registry = make(clock, stall_timeout=10.0)
    release = threading.Event()
    handled: list[str] = []

    def handler(batch: list[Delivery]) -> None:
        release.wait(10.0)
        handled.extend(d.sid for d in batch)

    options = GroupOptions(
        group="g",
        consumer="c1",
        start_id="0",
        read_count=10,
        read_block=0.05,
        claim_idle=60.0,
        claim_interval=60.0,
        max_deliveries=3,
    )
    with sup.adopting():
        streams = StreamGroupConsumer(client, ["s:{p0}:in"], options, handler)
    sup.watch_progress("entries", done=lambda: streams.settled, taken=lambda: streams.taken)
    sup.require("groups", lambda: streams.groups_ready)
    streams.start()
    try:
        wait_until(lambda: streams.groups_ready, 5.0, "groups")
        assert sup.check() and sup.loops() == ["stream-reader"]
        client.xadd("s:{p0}:in", {"n": "1"})
        wait_until(lambda: streams.taken == 1, 5.0, "entry taken")
        clock.now += 9.0
        assert sup.check(), "within the timeout"
        clock.now += 1.0
        assert not sup.check() and sup.stalled() == ["entries"]
        assert streams.worker.alive, "alive but stuck: only the progress watch sees it"
        release.set()
        wait_until(lambda: streams.settled == 1, 5.0, "entry settled")
        clock.now += 1.0
        assert sup.check() and handled
        assert sample(registry, "facemask_test_stalls_total", watch="entries") == 1
    finally:
        release.set()
        streams.stop(2.0)


def test_before_restart_runs_first_and_a_failing_one_counts_as_a_death(
    workers: list[Worker],
) -> None:
    clock = Clock()
    sup, _ = make(clock, restart_limit=2)
    target = Dying()
    prepared: list[int] = []

    def prepare() -> None:
        prepared.append(target.runs)
        if len(prepared) == 1:
            raise OSError("state not readable yet")

    worker = sup.adopt(
        Worker("consumer", target), RestartPolicy(backoff_initial=1.0, before_restart=prepare)
    )
    workers.append(worker)
    worker.start()
    target.die.set()
    assert worker.join(5.0)
    target.die.clear()
    sup.check()
    clock.now += 1.0
    sup.check()  # the hook fails: no restart
    assert prepared == [1] and worker.restarts == 0
    sup.check()  # one more death noticed, a longer back-off planned
    clock.now += 2.0
    sup.check()
    assert prepared == [1, 1] and worker.restarts == 1 and worker.alive
    assert not sup.fatal.is_set()


def test_a_periodic_tick_that_hangs_is_a_stall(workers: list[Worker]) -> None:
    clock = Clock()
    sup, _ = make(clock, stall_timeout=10.0)
    release = threading.Event()
    ticked: list[int] = []

    def tick() -> None:
        ticked.append(1)
        if len(ticked) == 2:
            release.wait(10.0)  # a Redis command on a frozen server

    with sup.adopting():
        worker = Worker.every("lag", 0.01, tick)
    workers.append(worker)
    worker.start()
    wait_until(lambda: len(ticked) == 2, 5.0, "second tick")
    assert sup.check()
    clock.now += 10.0
    assert not sup.check() and sup.stalled() == ["lag"]
    release.set()
    wait_until(lambda: worker.ticks_done >= 2, 5.0, "tick done")
    clock.now += 1.0
    assert sup.check()


@pytest.mark.parametrize(
    ("states", "advance", "expected"),
    [
        # (condition value per check, seconds between checks) -> (level, message) logged
        (
            [False, True],
            1.0,
            [("INFO", "waiting for readiness condition"), ("INFO", "readiness condition true")],
        ),
        (
            [False, False, False],
            6.0,
            [
                ("INFO", "waiting for readiness condition"),
                ("WARNING", "readiness condition still false after start"),
            ],
        ),
        (
            [True, False, True],
            1.0,
            [
                ("WARNING", "readiness condition false"),
                ("INFO", "readiness condition true again"),
            ],
        ),
        ([True, True], 1.0, []),
    ],
)
def test_a_condition_still_connecting_at_start_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
    states: list[bool],
    advance: float,
    expected: list[tuple[str, str]],
) -> None:
    clock = Clock()
    sup, _ = make(clock)
    current = {"value": False}
    sup.require("redis", lambda: current["value"])
    with caplog.at_level(logging.INFO, logger="facemask.infra.watchdog"):
        for value in states:
            current["value"] = value
            sup.check()
            clock.now += advance
    logged = [
        (r.levelname, r.getMessage()) for r in caplog.records if "condition" in r.getMessage()
    ]
    assert logged == expected
    verdicts = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.getMessage().startswith("service ")
    ]
    if not states[0]:  # the start-up verdict is no warning
        assert verdicts[0] == ("INFO", "service not ready")
