"""Backoff: the one retry-delay policy (exponential, capped, jittered)."""

from __future__ import annotations

import random

import pytest

from facemask.infra.backoff import Backoff


@pytest.mark.parametrize(
    ("initial", "cap", "factor", "expected"),
    [
        (0.1, 5.0, 2.0, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),
        (1.0, 30.0, 2.0, [1, 2, 4, 8, 16, 30, 30, 30]),
        (0.5, 10.0, 3.0, [0.5, 1.5, 4.5, 10, 10, 10, 10, 10]),
        (2.0, 1.0, 2.0, [2.0] * 8),  # a cap below initial is raised to initial
        (0.05, 0.05, 1.0, [0.05] * 8),
    ],
)
def test_without_jitter_delays_grow_by_factor_up_to_the_cap(
    initial: float, cap: float, factor: float, expected: list[float]
) -> None:
    backoff = Backoff(initial, cap, factor=factor, jitter=0.0)
    assert [backoff.next() for _ in expected] == pytest.approx(expected)
    assert backoff.attempts == len(expected)
    backoff.reset()
    assert backoff.attempts == 0 and backoff.next() == pytest.approx(initial)


def test_delay_depends_on_the_attempt_not_on_the_state() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 10, 1000)] == [1, 2, 4, 30, 30]
    assert backoff.delay(0) == 1.0  # "no failure yet" is treated as the first
    assert backoff.attempts == 0


@pytest.mark.parametrize(
    ("spread", "jitter", "low", "high"),
    [("around", 0.2, 0.8, 1.2), ("below", 0.5, 0.5, 1.0), ("around", 1.0, 0.0, 2.0)],
)
def test_jitter_stays_within_its_spread_and_the_cap(
    spread: str, jitter: float, low: float, high: float
) -> None:
    backoff = Backoff(1.0, 20.0, jitter=jitter, spread=spread, rng=random.Random(7))  # type: ignore[arg-type]
    for attempt in range(1, 12):
        base = min(20.0, 2.0 ** (attempt - 1))
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(base * low - 1e-9 <= d <= min(20.0, base * high) + 1e-9 for d in delays)
        assert len({round(d, 9) for d in delays}) > 50  # really random (some hit the cap)
    # It spreads over the whole range, not a corner of it.
    delays = [backoff.delay(3) for _ in range(2000)]
    assert min(delays) < 4 * (low + 0.05) and max(delays) > 4 * (high - 0.05)


def test_the_same_seed_gives_the_same_delays() -> None:
    first = Backoff(0.5, 10.0, rng=random.Random(3))
    second = Backoff(0.5, 10.0, rng=random.Random(3))
    assert [first.next() for _ in range(10)] == [second.next() for _ in range(10)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0.0, "cap": 1.0},
        {"initial": 1.0, "cap": -1.0},
        {"initial": 1.0, "cap": 2.0, "factor": 0.5},
        {"initial": 1.0, "cap": 2.0, "jitter": 1.5},
        {"initial": 1.0, "cap": 2.0, "jitter": -0.1},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
