"""Capped exponential backoff with jitter: the one retry-delay policy of the services
(camera and Redis reconnects, stream consumers, alert deliveries). Redis *client* retries
of a single command are redis-py's own ``Retry`` (see :mod:`facemask.infra.redisconn`)."""

from __future__ import annotations

import random
from typing import Literal


class Backoff:
    """Delays ``initial, factor*initial, factor**2*initial, ...`` capped at ``cap``.

    Each delay is jittered so many clients that failed together (edge nodes that lost the
    same Redis, outbox rows of one sink) do not retry in lock-step: ``spread="around"``
    draws it from ``base * (1 ± jitter)``, ``spread="below"`` from
    ``[base * (1 - jitter), base]`` (``jitter=0.5``: "equal jitter", half fixed, half
    random). Never above ``cap``. ``jitter=0`` gives the exact sequence.

    :meth:`next` / :meth:`reset` keep the count of consecutive failures;
    :meth:`delay` is the delay after a given number of failures, for callers that store
    the count themselves (an outbox row's attempts).
    """

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        spread: Literal["around", "below"] = "around",
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap <= 0:
            raise ValueError("backoff delays must be > 0")
        if factor < 1.0:
            raise ValueError("backoff factor must be >= 1")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("backoff jitter must be within 0..1")
        self.initial = initial
        self.cap = max(cap, initial)
        self.factor = factor
        self.jitter = jitter
        self.spread = spread
        self.attempts = 0
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """The jittered delay after ``attempt`` consecutive failures (``attempt >= 1``)."""
        base = min(self.cap, self.initial * self.factor ** min(max(0, attempt - 1), 64))
        spread = base * self.jitter
        high = spread if self.spread == "around" else 0.0
        jittered = base + self._rng.uniform(-spread, high) if spread else base
        return min(self.cap, max(0.0, jittered))

    def next(self) -> float:
        """The delay before the next attempt (grows until the cap)."""
        self.attempts += 1
        return self.delay(self.attempts)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
