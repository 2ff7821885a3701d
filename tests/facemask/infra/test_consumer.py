"""StreamGroupConsumer against a real redis-server: reading, reclaiming, bounded
redeliveries, NOGROUP recovery, back-off on connection loss, the in-flight limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from facemask.dev.localredis import RedisProcess
from facemask.infra.backoff import Backoff
from facemask.infra.consumer import (
    MAX_DELIVERIES_REASON,
    Delivery,
    GroupOptions,
    StreamGroupConsumer,
)
from facemask.infra.redisconn import CONNECTION_ERRORS, connect

KEYS = ["t:{p0}:in", "t:{p1}:in"]
GROUP = "g"
DEADLETTER = "t:deadletter"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A batch handler that keeps what it got (and can be told to fail)."""

    def __init__(self) -> None:
        self.batches: list[list[Delivery]] = []
        self.fail_with: Exception | None = None

    def __call__(self, batch: list[Delivery]) -> None:
        self.batches.append(batch)
        if self.fail_with is not None:
            raise self.fail_with

    @property
    def sids(self) -> list[str]:
        return [d.sid for batch in self.batches for d in batch]


@pytest.fixture()
def client(redis_server: RedisProcess) -> Iterator[Any]:
    c = connect(redis_server.url, socket_timeout=2.0, connect_timeout=0.5)
    try:
        yield c
    finally:
        c.close()


Make = Callable[..., StreamGroupConsumer]


@pytest.fixture()
def make(client: Any) -> Iterator[Make]:
    made: list[StreamGroupConsumer] = []

    def build(
        handler: Any = None,
        *,
        consumer: str = "c1",
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        on_error: Any = None,
        on_reclaimed: Any = None,
        sleep: Any = None,
        **options: Any,
    ) -> StreamGroupConsumer:
        values: dict[str, Any] = {
            "group": GROUP,
            "consumer": consumer,
            "start_id": "0",
            "read_count": 10,
            "read_block": 0.05,
            "claim_idle": 0.05,
            "claim_interval": 60.0,
            "max_deliveries": 3,
        }
        values.update(options)
        group = StreamGroupConsumer(
            client,
            KEYS,
            GroupOptions(**values),
            handler or Recorder(),
            clock=clock or Clock(),
            backoff=backoff or Backoff(0.1, 0.8, jitter=0.0),
            on_error=on_error,
            on_reclaimed=on_reclaimed,
            sleep=sleep,
        )
        made.append(group)
        return group

    yield build
    for group in made:
        group.stop(2.0)


def add(client: Any, count: int, key: str = KEYS[0]) -> list[str]:
    return [client.xadd(key, {"n": str(i)}).decode() for i in range(count)]


def pending_of(client: Any, consumer: str) -> list[str]:
    out = []
    for key in KEYS:
        if not client.exists(key):
            continue
        for entry in client.xpending_range(key, GROUP, "-", "+", 100, consumername=consumer):
            out.append(entry["message_id"].decode())
    return out


def step_until(group: StreamGroupConsumer, handler: Recorder, count: int) -> None:
    for _ in range(20):
        if len(handler.sids) >= count:
            return
        group.step()
    raise AssertionError(f"got {len(handler.sids)} entries, wanted {count}")


# -- reading -----------------------------------------------------------------------


def test_reads_new_entries_of_every_stream_and_acks_them(client: Any, make: Make) -> None:
    handler = Recorder()
    group = make(handler)
    first = add(client, 3, KEYS[0])
    second = add(client, 2, KEYS[1])
    step_until(group, handler, 5)
    got = {(d.stream, d.sid) for b in handler.batches for d in b}
    assert got == {(KEYS[0], s) for s in first} | {(KEYS[1], s) for s in second}
    delivery = handler.batches[0][0]
    assert delivery.fields == {b"n": b"0"} and not delivery.reclaimed and delivery.rejected is None
    assert group.groups_ready and sorted(pending_of(client, "c1")) == sorted(first + second)
    group.ack({KEYS[0]: first, KEYS[1]: second})
    assert pending_of(client, "c1") == []
    assert group.lag() == {KEYS[0]: (0, 0), KEYS[1]: (0, 0)}


def test_own_pending_entries_come_first_after_a_restart_and_after_rewind(
    client: Any, make: Make
) -> None:
    old = add(client, 3)
    before = Recorder()
    step_until(make(before), before, 3)  # read, never acknowledged: the process "crashed"
    assert before.sids == old
    new = add(client, 2)
    after = Recorder()
    restarted = make(after)  # the same consumer name, a new process
    restarted.step()
    assert after.sids == old and not any(d.reclaimed for d in after.batches[0])
    step_until(restarted, after, 5)
    assert after.sids == old + new
    restarted.rewind()  # a failed batch: its entries are read again, in order
    restarted.step()
    assert after.sids[-5:] == old + new


def test_without_read_pending_only_new_entries_are_read(client: Any, make: Make) -> None:
    old = add(client, 2)
    handler = Recorder()
    step_until(make(handler), handler, 2)
    assert handler.sids == old
    new = add(client, 1)
    fresh = Recorder()
    step_until(make(fresh, read_pending=False), fresh, 1)
    assert fresh.sids == new


# -- reclaiming --------------------------------------------------------------------


def test_entries_of_a_dead_consumer_are_reclaimed_after_claim_idle(client: Any, make: Make) -> None:
    clock = Clock()
    counted: list[int] = []
    handler = Recorder()
    group = make(
        handler,
        clock=clock,
        on_reclaimed=counted.append,
        claim_interval=5.0,
        claim_idle=0.5,
        read_pending=False,
    )
    group.ensure_groups()
    stranded = add(client, 4)
    client.xreadgroup(GROUP, "dead", {KEYS[0]: ">"})  # read, then the consumer died
    group.step()
    assert handler.sids == []  # not idle long enough yet
    clock.now += 60.0
    time.sleep(0.6)  # > claim_idle
    group.step()  # a sweep is due at once
    assert handler.sids == stranded and all(d.reclaimed for d in handler.batches[0])
    assert counted == [4]
    assert pending_of(client, "dead") == [] and pending_of(client, "c1") == stranded
    group.ack({KEYS[0]: stranded})

    # The next sweep waits claim_interval.
    more = add(client, 1)
    client.xreadgroup(GROUP, "dead", {KEYS[0]: ">"})
    time.sleep(0.6)
    group.step()
    assert handler.sids == stranded  # not yet due: nothing new for c1
    clock.now += 5.0
    group.step()
    assert handler.sids == stranded + more


def test_a_full_sweep_claims_again_on_the_next_pass(client: Any, make: Make) -> None:
    handler = Recorder()
    group = make(handler, read_count=3, claim_idle=0.5, read_pending=False)
    group.ensure_groups()
    stranded = add(client, 7)
    client.xreadgroup(GROUP, "dead", {KEYS[0]: ">"})
    time.sleep(0.6)
    for _ in range(3):
        group.step()
    assert [len(b) for b in handler.batches] == [3, 3, 1]
    assert handler.sids == stranded


# -- bounded redeliveries ------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "rejected"),
    [(1, False), (2, False), (3, True), (7, True)],
)
def test_reclaimed_entries_delivered_max_deliveries_times_are_rejected(
    client: Any, make: Make, earlier: int, rejected: bool
) -> None:
    handler = Recorder()
    group = make(handler, max_deliveries=3, read_pending=False)
    group.ensure_groups()
    (sid,) = add(client, 1)
    client.xreadgroup(GROUP, "dead", {KEYS[0]: ">"})
    client.xclaim(KEYS[0], GROUP, "dead", 0, [sid], retrycount=earlier)
    time.sleep(0.1)
    group.step()
    (delivery,) = handler.batches[0]
    assert delivery.sid == sid and delivery.fields == {b"n": b"0"}
    if rejected:
        assert delivery.rejected == (
            MAX_DELIVERIES_REASON,
            f"delivered {earlier} times without a result",
        )
    else:
        assert delivery.rejected is None and delivery.reclaimed
    assert pending_of(client, "c1") == [sid]  # claimed either way: c1 may ack it


def test_own_pending_entries_are_rejected_after_max_deliveries(client: Any, make: Make) -> None:
    """A batch that keeps failing is read again max_deliveries times, then rejected."""
    handler = Recorder()
    handler.fail_with = RuntimeError("poison")
    errors: list[BaseException] = []
    group = make(handler, max_deliveries=3, on_error=errors.append)
    group.step()
    sids = add(client, 2)
    for _ in range(4):
        assert group.step() > 0  # failed: back off
        group.rewind()  # as a service rolls back
    assert [[d.rejected for d in b] for b in handler.batches] == [[None, None]] * 3 + [
        [(MAX_DELIVERIES_REASON, "delivered 3 times without a result")] * 2
    ]
    assert len(errors) == 4 and all(isinstance(e, RuntimeError) for e in errors)

    # The handler dead-letters rejected entries with their reason and acknowledges them.
    handler.fail_with = None
    handler.batches.clear()
    group.rewind()
    group.step()
    batch = handler.batches[0]
    assert all(d.rejected for d in batch)
    group.deadletter([(d, *d.rejected) for d in batch if d.rejected], stream=DEADLETTER, maxlen=100)
    group.ack({KEYS[0]: [d.sid for d in batch]})
    dead = client.xrange(DEADLETTER)
    assert [f[b"reason"] for _, f in dead] == [MAX_DELIVERIES_REASON.encode()] * 2
    assert [f[b"sid"].decode() for _, f in dead] == sids
    assert dead[0][1][b"stream"].decode() == KEYS[0] and dead[0][1][b"orig_n"] == b"0"
    assert b"delivered" in dead[0][1][b"error"]
    assert pending_of(client, "c1") == []


# -- failures ------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["group destroyed", "stream deleted"])
def test_groups_are_created_again_after_nogroup(client: Any, make: Make, loss: str) -> None:
    handler = Recorder()
    errors: list[BaseException] = []
    group = make(handler, on_error=errors.append)
    group.step()
    assert group.groups_ready
    for key in KEYS:
        if loss == "group destroyed":
            client.xgroup_destroy(key, GROUP)
        else:
            client.delete(key)
    assert group.step() == pytest.approx(0.1)  # NOGROUP: back off, forget the groups
    assert not group.groups_ready
    assert len(errors) == 1 and "NOGROUP" in str(errors[0])
    sids = add(client, 2)
    assert group.step() == 0.0
    assert group.groups_ready and handler.sids == sids


def test_backs_off_while_redis_is_down_and_resets_after(
    redis_server: RedisProcess, client: Any, make: Make
) -> None:
    errors: list[BaseException] = []
    handler = Recorder()
    group = make(handler, on_error=errors.append, backoff=Backoff(0.1, 0.8, jitter=0.0))
    assert group.step() == 0.0
    redis_server.stop()
    delays = [group.step() for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.8])
    assert len(errors) == 5 and all(isinstance(e, CONNECTION_ERRORS) for e in errors)
    assert not group.groups_ready
    redis_server.start()
    sids = add(client, 1)
    assert group.step() == 0.0
    assert handler.sids == sids and group.groups_ready
    redis_server.stop()
    assert group.step() == pytest.approx(0.1)  # the success reset the back-off


def test_the_thread_sleeps_the_backoff_with_the_injected_sleep(
    redis_server: RedisProcess, make: Make
) -> None:
    slept: list[float] = []
    enough = threading.Event()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) >= 4:
            enough.set()
            time.sleep(0.05)

    redis_server.stop()
    group = make(sleep=sleep, backoff=Backoff(0.1, 0.3, jitter=0.0))
    group.start()
    assert enough.wait(30), slept
    assert group.stop(5.0)
    assert slept[:4] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert not group.worker.failed


def test_a_failing_handler_backs_off_and_its_batch_is_delivered_again(
    client: Any, make: Make
) -> None:
    handler = Recorder()
    handler.fail_with = RuntimeError("disk full")
    group = make(handler, on_error=lambda exc: group.rewind())
    group.step()
    sids = add(client, 2)
    assert group.step() == pytest.approx(0.1)
    assert group.step() == pytest.approx(0.2)
    handler.fail_with = None
    assert group.step() == 0.0
    assert handler.sids == sids * 3


# -- threads -------------------------------------------------------------------------


def test_in_flight_limit_holds_back_reads_until_entries_are_done(client: Any, make: Make) -> None:
    handler = Recorder()
    group = make(handler, max_inflight=3, read_pending=False)
    group.ensure_groups()
    sids = add(client, 5)
    group.start()
    deadline = time.monotonic() + 10
    while len(handler.sids) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert handler.sids == sids[:3] and group.inflight == 3
    group.done(2)
    while len(handler.sids) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.sids == sids and group.inflight == 3
    group.done(3)
    assert group.inflight == 0
    assert group.stop(2.0) and not group.running


def test_stop_ends_a_blocked_reader_and_running_reflects_the_thread(make: Make) -> None:
    group = make(max_inflight=1, read_block=0.2)
    group.start()
    deadline = time.monotonic() + 5
    while not group.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert group.running
    started = time.monotonic()
    assert group.stop(5.0)
    assert time.monotonic() - started < 2.0
    assert not group.running and not group.worker.failed


def test_a_poisoned_redis_reply_does_not_kill_the_thread(client: Any, make: Make) -> None:
    """Anything the loop raises is logged, passed to on_error, and the loop goes on."""
    errors: list[BaseException] = []
    handler = Recorder()
    group = make(handler, on_error=errors.append, backoff=Backoff(0.01, 0.02, jitter=0.0))
    client.set(KEYS[0], "not a stream")  # XGROUP CREATE fails: WRONGTYPE
    group.start()
    deadline = time.monotonic() + 10
    while len(errors) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors and isinstance(errors[0], redis.ResponseError)
    client.delete(KEYS[0])
    sids = add(client, 1)
    while handler.sids != sids and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.sids == sids and group.worker.alive and not group.worker.failed


def test_group_options_from_a_services_settings() -> None:
    from types import SimpleNamespace

    settings = SimpleNamespace(
        consumer_group="g",
        consumer_name="c",
        read_count=7,
        read_block=0.3,
        claim_idle=9.0,
        claim_interval=2.0,
        max_deliveries=4,
    )
    options = GroupOptions.from_settings(settings, start_id="0", max_inflight=16)  # type: ignore[arg-type]
    assert options == GroupOptions(
        group="g",
        consumer="c",
        start_id="0",
        read_count=7,
        read_block=0.3,
        claim_idle=9.0,
        claim_interval=2.0,
        max_deliveries=4,
        max_inflight=16,
    )
