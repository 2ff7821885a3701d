"""Progress of long CLI commands on stderr: a tqdm bar of *finished* work with its rate and
ETA, and one summary line when the work is done.

:class:`Progress` counts what is done - an image whose detections came back, not one read
or sent - against a total that may be corrected on the way (a video holding fewer frames
than its container declared) or unknown (an endless stream: count and rate, no ETA).
Work is reported either as a step (:meth:`Progress.advance`) or as the count done so far
(:meth:`Progress.update`). The bar is shown on a terminal only unless ``--progress`` /
``--no-progress`` decide (:func:`add_progress_argument`, :func:`progress_enabled`);
disabled, it still counts, so the summary line does not depend on it. Lines written
through :meth:`Progress.write` (errors, results on the same terminal) do not tear the
bar. stdout stays the command's results only. tqdm is imported only when a bar is made
(it comes with the ``inference`` extra, as do the commands that use it).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from facemask.infra.log import text_value


def add_progress_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--progress`` / ``--no-progress``: a bar counting finished ``what`` on stderr."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"a progress bar of finished {what} with an ETA on stderr (default: only when "
        "stderr is a terminal)",
    )


def progress_enabled(choice: bool | None, stream: IO[str] | None = None) -> bool:
    """``choice`` (``--progress`` / ``--no-progress``) when given, else whether ``stream``
    (default: stderr) is a terminal."""
    if choice is not None:
        return choice
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # not a real stream, or closed
        return False


class Progress:
    """Finished items out of ``total`` (None: unknown), drawn as a tqdm bar on ``stream``
    when ``enabled``. Thread-safe: the total may be corrected from a reader thread. The
    bar is redrawn at most every ``min_interval`` seconds."""

    def __init__(
        self,
        total: int | None,
        *,
        enabled: bool,
        stream: IO[str] | None = None,
        desc: str | None = None,
        unit: str = "it",
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 0.2,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._done = 0
        self._total = total
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=min_interval,
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
            self._step(count)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` items are finished so far (monotonic), of ``total`` when it changed."""
        with self._lock:
            if total is not None and total != self._total:
                self._set_total(total)
            if done > self._done:
                self._step(done - self._done)

    def correct_total(self, delta: int) -> None:
        """An input gave ``delta`` items more (or, negative, fewer) than counted on."""
        with self._lock:
            if self._total is not None and delta:
                self._set_total(max(self._done, self._total + delta))
                if self._bar is not None:
                    self._bar.refresh()

    def _step(self, count: int) -> None:
        self._done += count
        if self._total is not None and self._done > self._total:
            self._set_total(self._done)
        if self._bar is not None:
            self._bar.update(count)

    def _set_total(self, total: int) -> None:
        self._total = total
        if self._bar is not None:
            self._bar.total = total

    def stage(self, desc: str) -> None:
        """Rename the bar (e.g. when the last step after the counted work begins)."""
        with self._lock:
            if self._bar is not None:
                self._bar.set_description_str(desc)

    def write(self, line: str, stream: IO[str] | None = None) -> None:
        """Write ``line`` (no newline needed) to ``stream`` (default: the bar's), clearing
        and redrawing the bar around it when both are on screen."""
        target = stream if stream is not None else self.stream
        with self._lock:
            if self._bar is not None:
                self._bar.write(line, file=target)
            else:
                target.write(line + "\n")
        target.flush()

    def close(self) -> None:
        """Leave the bar at its last state."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def summary(self, **fields: Any) -> str:
        """``150 images in 36.2 s (4.1 images/s)`` and ``key=value`` extras."""
        seconds = self.elapsed
        rate = self._done / seconds if seconds > 0 else 0.0
        units = self.unit if self._done == 1 else f"{self.unit}s"
        line = f"{self._done} {units} in {seconds:.1f} s ({rate:.1f} {self.unit}s/s)"
        extras = " ".join(f"{key}={text_value(value)}" for key, value in fields.items())
        return f"{line} {extras}".rstrip()


@contextlib.contextmanager
def progress(total: int | None, **options: Any) -> Iterator[Progress]:
    """A :class:`Progress` (same options) closed at the end of the block, even on an error."""
    bar = Progress(total, **options)
    try:
        yield bar
    finally:
        bar.close()
