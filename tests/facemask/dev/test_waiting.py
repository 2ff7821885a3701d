"""facemask.dev.waiting.wait_until on a fake clock."""

from __future__ import annotations

import pytest

from facemask.dev.waiting import WaitTimeoutError, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_truthy_value() -> None:
    clock = Clock()
    values = iter([0, None, "", ["got"]])
    assert wait_until(lambda: next(values), 10, clock=clock, sleep=clock.sleep) == ["got"]
    assert clock.sleeps == [0.1, 0.1, 0.1]


def test_times_out_on_its_clock_after_a_last_look() -> None:
    clock = Clock()
    calls: list[float] = []

    def never() -> bool:
        calls.append(clock.now)
        return False

    with pytest.raises(WaitTimeoutError, match=r"timed out after 2s waiting for the moon"):
        wait_until(never, 2, "the moon", 0.5, clock=clock, sleep=clock.sleep)
    assert calls == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert issubclass(WaitTimeoutError, TimeoutError)


def test_a_late_success_after_an_overlong_sleep_counts() -> None:
    clock = Clock()

    def slow_sleep(_seconds: float) -> None:
        clock.now += 100

    values = iter([False, True])
    assert wait_until(lambda: next(values), 1, clock=clock, sleep=slow_sleep) is True


def test_exceptions_of_the_predicate_end_the_wait() -> None:
    clock = Clock()

    def broken() -> bool:
        raise RuntimeError("child died")

    with pytest.raises(RuntimeError, match="child died"):
        wait_until(broken, 10, clock=clock, sleep=clock.sleep)
