"""StreamGroupConsumer against a real redis-server: reading, reclaiming, bounded
redeliveries, NOGROUP recovery, back-off on connection loss, the in-flight limit."""

from __future__ import annotations

import threading
import time
from collections import Counter
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
        on_deadletter: Any = None,
        fair_key: Any = None,
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
            deadletter_key=lambda stream: DEADLETTER,
            deadletter_maxlen=100,
            on_deadletter=on_deadletter,
            fair_key=fair_key,
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
    if rejected:
        # Rejected entries never reach the handler: dead-lettered with the reason, acked.
        assert handler.batches == []
        ((_, fields),) = client.xrange(DEADLETTER)
        assert fields[b"reason"] == MAX_DELIVERIES_REASON.encode()
        assert fields[b"error"] == f"delivered {earlier} times without a result".encode()
        assert fields[b"sid"].decode() == sid and fields[b"orig_n"] == b"0"
        assert pending_of(client, "c1") == [] and group.deadlettered == {MAX_DELIVERIES_REASON: 1}
        assert group.taken == group.settled == 1
    else:
        (delivery,) = handler.batches[0]
        assert delivery.sid == sid and delivery.fields == {b"n": b"0"}
        assert delivery.rejected is None and delivery.reclaimed
        assert pending_of(client, "c1") == [sid]  # claimed: c1 may ack it


def test_own_pending_entries_are_rejected_after_max_deliveries(client: Any, make: Make) -> None:
    """A batch whose every entry fails (not one poison entry: the service's state) is read
    again max_deliveries times, then its entries are rejected and dead-lettered."""
    handler = Recorder()
    handler.fail_with = RuntimeError("disk full")
    errors: list[BaseException] = []
    reasons: list[str] = []
    group = make(handler, max_deliveries=3, on_error=errors.append, on_deadletter=reasons.append)
    group.step()
    sids = add(client, 2)
    for _ in range(3):
        assert group.step() > 0  # every entry failed: back off, no strikes
    # Each pass: the batch, then each half alone (bisected), all failing.
    assert [[d.sid for d in b] for b in handler.batches] == [sids, sids[:1], sids[1:]] * 3
    assert len(errors) == 9 and all(isinstance(e, RuntimeError) for e in errors)
    assert group.deadlettered == {}
    assert group.step() == 0.0  # the 4th delivery: rejected, never handed out
    assert len(handler.batches) == 9
    dead = client.xrange(DEADLETTER)
    assert [f[b"reason"] for _, f in dead] == [MAX_DELIVERIES_REASON.encode()] * 2
    assert [f[b"sid"].decode() for _, f in dead] == sids
    assert dead[0][1][b"stream"].decode() == KEYS[0] and dead[0][1][b"orig_n"] == b"0"
    assert b"delivered" in dead[0][1][b"error"]
    assert pending_of(client, "c1") == [] and reasons == [MAX_DELIVERIES_REASON] * 2
    assert group.taken == group.settled == 8


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
    assert handler.sids == sids * 4 + sids  # twice (batch, then bisected), then once
    assert pending_of(client, "c1") == sids  # the handler acks: this one does not


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
        entry_attempts=2,
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
        entry_attempts=2,
        max_inflight=16,
    )


# -- entry isolation -----------------------------------------------------------------


class Poisoned:
    """A handler like a service's: processes and acks every entry, raises on ``poison``
    (rolled back: nothing of a failed call is kept)."""

    def __init__(self, client: Any, poison: set[bytes]) -> None:
        self.client = client
        self.poison = poison
        self.done: list[str] = []
        self.calls = 0

    def __call__(self, batch: list[Delivery]) -> None:
        self.calls += 1
        for delivery in batch:
            assert delivery.fields is not None and delivery.rejected is None
            if delivery.fields[b"n"] in self.poison:
                raise ValueError(f"cannot format n={delivery.fields[b'n'].decode()}")
        self.done.extend(d.sid for d in batch)
        for d in batch:
            self.client.xack(d.stream, GROUP, d.sid)


def test_a_poison_entry_is_narrowed_down_retried_and_dead_lettered(client: Any, make: Make) -> None:
    handler = Poisoned(client, {b"3"})
    errors: list[BaseException] = []
    reasons: list[str] = []
    group = make(handler, on_error=errors.append, on_deadletter=reasons.append, entry_attempts=3)
    group.step()
    sids = add(client, 8)
    assert group.step() > 0  # the poison entry failed once: retried after a back-off
    # Bisected: every other entry of the batch is processed (and acked) at once.
    assert sorted(handler.done) == sorted(sids[:3] + sids[4:])
    assert pending_of(client, "c1") == [sids[3]]
    more = add(client, 2, KEYS[1])
    assert group.step() > 0  # the poison entry alone (own pending first), fails again
    assert group.step() == 0.0  # third failure: dead-lettered, acked
    ((_, fields),) = client.xrange(DEADLETTER)
    assert fields[b"reason"] == b"error" and fields[b"sid"].decode() == sids[3]
    assert fields[b"error"] == b"ValueError: cannot format n=3" and fields[b"orig_n"] == b"3"
    assert reasons == ["error"] and group.deadlettered == {"error": 1}
    assert all(isinstance(e, ValueError) for e in errors) and errors
    group.step()  # own pending entries: none left
    group.step()
    assert sorted(handler.done) == sorted(sids[:3] + sids[4:] + more)
    assert pending_of(client, "c1") == []
    assert group.taken == group.settled  # dead-lettered and retried entries settle too


def test_poison_entries_anywhere_in_a_running_consumer_never_block_the_others(
    client: Any, make: Make
) -> None:
    """Thread running, many poison entries in both streams: each dead-lettered once,
    every other entry processed once."""
    poison = {str(n).encode() for n in range(0, 60, 7)}
    handler = Poisoned(client, poison)
    group = make(handler, backoff=Backoff(0.001, 0.005, jitter=0.0), entry_attempts=2)
    group.ensure_groups()
    good: list[str] = []
    bad: list[str] = []
    for n in range(60):
        sid = client.xadd(KEYS[n % 2], {"n": str(n)}).decode()
        (bad if str(n).encode() in poison else good).append(sid)
    group.start()
    deadline = time.monotonic() + 15
    while (len(handler.done) < len(good) or client.xlen(DEADLETTER) < len(bad)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert sorted(handler.done) == sorted(good)  # each once
    dead = sorted(f[b"sid"].decode() for _, f in client.xrange(DEADLETTER))
    assert dead == sorted(bad) and group.deadlettered == {"error": len(bad)}
    assert pending_of(client, "c1") == [] and group.worker.alive


def test_a_redis_fault_in_the_handler_is_not_taken_for_a_poison_entry(
    client: Any, make: Make
) -> None:
    handler = Recorder()
    handler.fail_with = redis.exceptions.OutOfMemoryError("OOM command not allowed")
    group = make(handler, entry_attempts=1)
    group.step()
    add(client, 3)
    for _ in range(3):
        assert group.step() > 0
    assert [len(b) for b in handler.batches] == [3, 3, 3]  # no bisection, no strikes
    assert client.xlen(DEADLETTER) == 0


def test_entries_trimmed_while_pending_are_rejected_as_trimmed(client: Any, make: Make) -> None:
    reasons: list[str] = []
    handler = Recorder()
    group = make(handler, on_deadletter=reasons.append)
    group.ensure_groups()
    sids = add(client, 3)
    client.xreadgroup(GROUP, "c1", {KEYS[0]: ">"})  # delivered, then trimmed
    client.xdel(KEYS[0], sids[1])
    group.step()  # the sweep (XAUTOCLAIM names deleted entries), then own pending ones
    group.step()
    assert handler.sids == [sids[0], sids[2]]
    ((_, fields),) = client.xrange(DEADLETTER)
    assert fields[b"reason"] == b"trimmed" and fields[b"sid"].decode() == sids[1]
    assert reasons == ["trimmed"] and pending_of(client, "c1") == [sids[0], sids[2]]


def test_an_async_consumer_isolates_entries_with_entry_failed(client: Any, make: Make) -> None:
    handler = Recorder()
    group = make(handler, max_inflight=4, read_pending=False, entry_attempts=2)
    group.ensure_groups()
    (sid,) = add(client, 1)
    group.step()
    (delivery,) = handler.batches[0]
    assert group.inflight == 1
    assert not group.entry_failed(delivery, KeyError("x"))  # strike 1: left pending
    assert group.inflight == 0 and pending_of(client, "c1") == [sid]
    assert group.entry_failed(delivery, KeyError("x"))  # strike 2: dead-lettered
    ((_, fields),) = client.xrange(DEADLETTER)
    assert fields[b"error"] == b"KeyError: 'x'" and pending_of(client, "c1") == []
    assert group.taken == 1 and group.inflight == 0


# -- fair reading --------------------------------------------------------------------

FOUR = [f"t:{{p{k}}}:in" for k in range(4)]


def test_overload_is_shared_fairly_by_streams_and_cameras(client: Any) -> None:
    """4 streams x 3 cameras, a backlog of 360 entries, 48 processed (two per step,
    oldest read first), in-flight limit 12: every camera's share of the processed entries
    is within 25 % of the mean. (The inference-level test shows the same against a real
    batcher, where reading in key order gave the first partition everything.)"""
    cameras = {key: [f"cam{k}{c}" for c in range(3)] for k, key in enumerate(FOUR)}
    for key in FOUR:
        pipe = client.pipeline(transaction=False)
        for n in range(90):
            pipe.xadd(key, {"camera": cameras[key][n % 3], "n": str(n)})
        pipe.execute()
    taken: list[Delivery] = []
    group = StreamGroupConsumer(
        client,
        FOUR,
        GroupOptions(
            group=GROUP,
            consumer="c1",
            start_id="0",
            read_count=32,
            read_block=0.01,
            claim_interval=1e9,
            read_pending=False,
            max_inflight=12,
        ),
        taken.extend,
        clock=Clock(),
        fair_key=lambda d: d.fields[b"camera"] if d.fields else None,
    )
    processed: Counter[str] = Counter()
    while sum(processed.values()) < 48:
        if group.inflight < 12:  # else step() would wait for a slot: nothing frees one here
            group.step()
        for delivery in taken[:2]:  # capacity: two entries per step, oldest first
            assert delivery.fields is not None
            processed[delivery.fields[b"camera"].decode()] += 1
        del taken[:2]
        group.done(2)
    mean = sum(processed.values()) / 12
    shares = {cam: processed[cam] for key in FOUR for cam in cameras[key]}
    assert all(abs(n - mean) <= 0.25 * mean for n in shares.values()), shares


def test_read_new_splits_the_count_and_gives_what_is_left_to_busy_streams(
    client: Any,
) -> None:
    from facemask.infra.redisconn import ensure_groups, read_new

    ensure_groups(client, FOUR, GROUP, "0")
    for n in range(20):
        client.xadd(FOUR[0], {"n": str(n)})
    for n in range(2):
        client.xadd(FOUR[1], {"n": str(n)})
    reply = read_new(client, GROUP, "c1", FOUR, count=12, block=0.01)
    got = {k.decode() if isinstance(k, bytes) else k: len(e) for k, e in reply}
    assert got == {FOUR[0]: 10, FOUR[1]: 2}  # 3 each, then FOUR[0] takes what is left
    assert read_new(client, GROUP, "c1", FOUR[1:], count=4, block=0.01) == []
    for key in FOUR:
        client.xadd(key, {"n": "x"})
    reply = read_new(client, GROUP, "c1", FOUR, count=2, block=0.01)
    assert sum(len(e) for _, e in reply) == 4  # one of each stream, even past count


# -- fault classification ------------------------------------------------------------


def test_faults_are_classified_by_type_and_error_code(client: Any) -> None:
    from facemask.infra.redisconn import classify, is_fault

    assert classify(redis.ConnectionError("x")) == "connection"
    assert classify(ConnectionRefusedError()) == "connection"
    assert classify(redis.TimeoutError()) == "timeout"
    assert classify(redis.exceptions.BusyLoadingError()) == "loading"
    assert classify(redis.exceptions.MovedError("3999 127.0.0.1:6381")) == "cluster"
    assert classify(redis.exceptions.TryAgainError()) == "cluster"
    assert classify(redis.exceptions.ClusterDownError("CLUSTERDOWN")) == "cluster"
    assert classify(redis.ResponseError("NOGROUP No such key")) == "nogroup"
    assert classify(OSError(28, "No space left on device")) == "other"  # not Redis
    assert classify(ValueError("bad")) == "other" and not is_fault(KeyError())
    # Real replies of a real server.
    with pytest.raises(redis.ResponseError) as nogroup:
        client.xreadgroup("nope", "c", {"t:none": ">"})
    assert classify(nogroup.value) == "nogroup"
    client.config_set("maxmemory", "1")
    try:
        with pytest.raises(redis.ResponseError) as oom:
            client.xadd("t:oom", {"a": "b"})
        assert classify(oom.value) == "oom"
        script = client.register_script("return redis.call('XADD', KEYS[1], '*', 'a', 'b')")
        with pytest.raises(redis.ResponseError) as in_script:
            script(keys=["t:oom"])
        assert classify(in_script.value) == "oom"
    finally:
        client.config_set("maxmemory", "0")
