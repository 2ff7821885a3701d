"""Capped exponential backoff with jitter (camera reconnects, Redis reconnects)."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial, 2*initial, 4*initial, ...`` capped at ``cap``, each jittered ±20 %.

    The jitter keeps many edge nodes that lost the same Redis from reconnecting in lock-step.
    """

    def __init__(
        self, initial: float, cap: float, *, factor: float = 2.0, jitter: float = 0.2
    ) -> None:
        if initial <= 0 or cap <= 0:
            raise ValueError("backoff delays must be > 0")
        self.initial = initial
        self.cap = max(cap, initial)
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = random.Random()

    def next(self) -> float:
        """The delay before the next attempt (grows until the cap)."""
        base = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        spread = base * self.jitter
        return min(self.cap, max(0.0, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
