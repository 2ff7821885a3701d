"""A progress bar of *finished* work for the command line (tqdm on stderr).

:class:`Progress` counts what is done - an image whose detections came back, not one read
or sent - against a total that may be corrected on the way (a video holding fewer frames
than its container declared) or unknown (an endless stream: count and rate, no ETA). It is
shown on a terminal only, unless forced (:func:`progress_enabled`); disabled, it still
counts, so the summary line does not depend on it. Lines written through
:meth:`Progress.write` (errors, results on the same terminal) do not tear the bar.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm


def progress_enabled(choice: bool | None, stream: TextIO) -> bool:
    """``--progress`` / ``--no-progress`` (True / False), else whether ``stream`` is a
    terminal."""
    if choice is not None:
        return choice
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Finished items out of ``total`` (None: unknown), drawn as a tqdm bar on ``stream``
    when ``enabled``. Thread-safe: the total may be corrected from a reader thread."""

    def __init__(
        self,
        total: int | None,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        desc: str | None = None,
        unit: str = "it",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._done = 0
        self._total = total
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=self.stream,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
        )

    @property
    def done(self) -> int:
        """Items finished so far."""
        return self._done

    @property
    def total(self) -> int | None:
        """Items expected in all (None: unknown)."""
        return self._total

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was created (on ``clock``)."""
        return self.clock() - self.started

    def advance(self, count: int = 1) -> None:
        """``count`` more items finished."""
        with self._lock:
            self._done += count
            if self._total is not None and self._done > self._total:
                self._set_total(self._done)
            self._bar.update(count)

    def correct_total(self, delta: int) -> None:
        """An input gave ``delta`` items more (or, negative, fewer) than counted on."""
        with self._lock:
            if self._total is not None and delta:
                self._set_total(max(self._done, self._total + delta))
                self._bar.refresh()

    def _set_total(self, total: int) -> None:
        self._total = total
        self._bar.total = total

    def write(self, line: str, stream: TextIO | None = None) -> None:
        """Write ``line`` (no newline needed) to ``stream`` (default: the bar's), clearing
        and redrawing the bar around it when both are on screen."""
        target = stream if stream is not None else self.stream
        if self.enabled:
            with self._lock:
                self._bar.write(line, file=target)
        else:
            target.write(line + "\n")
        target.flush()

    def close(self) -> None:
        """Leave the bar at its last state."""
        with self._lock:
            self._bar.close()
