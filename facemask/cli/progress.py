"""Progress of long CLI commands on stderr: a tqdm bar of *finished* work with its rate and
ETA, shown on a terminal (``--progress`` / ``--no-progress`` decide elsewhere), and one
summary line when the work is done.

stdout stays the command's results only; the bar is off when stderr is not a terminal
(a log file, a pipe) unless ``--progress`` asks for it. tqdm is imported only when a bar
is made (it comes with the ``inference`` extra, as do the commands that use it).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
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


def progress_wanted(flag: bool | None, stream: IO[str] | None = None) -> bool:
    """``flag`` when given, else whether ``stream`` (stderr) is a terminal."""
    if flag is not None:
        return flag
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Progress:
    """Finished work of one command: a bar (when enabled) and the summary line.

    :meth:`update` takes the count done so far (monotonic; it never counts work that is
    only submitted). :meth:`summary` is ``N unit in S s (R unit/s)`` plus extra fields.
    The bar is redrawn at most every ``min_interval`` seconds.
    """

    def __init__(
        self,
        total: int | None,
        *,
        unit: str,
        desc: str,
        enabled: bool,
        stream: IO[str] | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.perf_counter()
        self._stream = sys.stderr if stream is None else stream
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
                mininterval=min_interval,
            )

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units are finished (of ``total``, when it changed)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        step, self.done = done - self.done, done
        if self._bar is not None and step > 0:
            self._bar.update(step)

    def stage(self, desc: str) -> None:
        """Rename the bar (e.g. when the last step after the counted work begins)."""
        if self._bar is not None:
            self._bar.set_description_str(desc)

    def close(self) -> None:
        """Take the bar off (it stays as its last state on the terminal)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, **fields: Any) -> str:
        """``150 images in 36.2 s (4.1 images/s)`` and ``key=value`` extras."""
        seconds = time.perf_counter() - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        units = self.unit if self.done == 1 else f"{self.unit}s"
        line = f"{self.done} {units} in {seconds:.1f} s ({rate:.1f} {self.unit}s/s)"
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
