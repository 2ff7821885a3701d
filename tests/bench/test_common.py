"""bench.common helpers that decide reported figures."""

from __future__ import annotations

import math

import pytest

from bench.common import steady_rate


@pytest.mark.parametrize(
    ("completed", "start", "end", "warmup", "expected"),
    [
        # 10/s throughout a 10 s run: 2 s of warm-up left out, 8 s window, 80 inside
        ([i / 10 for i in range(101)], 0.0, 10.0, None, 10.0),
        # a slow ramp-up (1/s for 2 s) then 20/s: only the steady 20/s counts
        ([0.5, 1.5] + [2 + i / 20 for i in range(161)], 0.0, 10.0, 2.0, 20.0),
        # what drains after the load stopped is not counted
        ([5.0, 6.0, 12.0, 13.0], 4.0, 8.0, 0.0, 2 / 4),
        # a short run: a quarter of it is the warm-up
        ([0.1, 0.6, 0.9, 1.9], 0.0, 2.0, None, 3 / 1.5),
        ([], 0.0, 10.0, None, 0.0),
    ],
)
def test_steady_rate(
    completed: list[float], start: float, end: float, warmup: float | None, expected: float
) -> None:
    assert steady_rate(completed, start, end, warmup) == pytest.approx(expected)


def test_steady_rate_of_an_empty_window_is_nan() -> None:
    assert math.isnan(steady_rate([1.0], 5.0, 5.0))
    assert math.isnan(steady_rate([1.0], 0.0, 3.0, warmup=3.0))
