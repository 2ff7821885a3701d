"""The one bounded polling loop ("wait until") of the developer tooling, the tests and the
benchmarks.

The clock and the sleep are parameters, so a test can drive a wait with a fake clock
(nothing sleeps, no wall-clock threshold) and a caller can make a wait interruptible
(``sleep=stop_event.wait``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], object]


class WaitTimeoutError(TimeoutError):
    """A :func:`wait_until` predicate stayed false until the timeout."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str = "condition",
    interval: float = 0.1,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy,
    and return that; raise :class:`WaitTimeoutError` ("timed out after 5s waiting for
    ``what``") once ``timeout`` seconds have passed on ``clock``.

    The predicate is always called at least once, and once more after the deadline, so a
    slow sleep never turns a success into a timeout. Exceptions of the predicate propagate
    (a predicate may raise to end the wait early, e.g. when a child process has died).
    """
    deadline = clock() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if clock() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        sleep(interval)
