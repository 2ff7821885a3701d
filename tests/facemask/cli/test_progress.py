"""The CLI's progress bar: on a terminal only unless asked, counting what is finished."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from typing import IO

import pytest

from facemask.cli.progress import Progress, progress, progress_enabled


@pytest.fixture()
def terminal() -> Iterator[IO[str]]:
    """A real terminal (the slave end of a pseudo-terminal)."""
    master, slave = os.openpty()
    with open(slave, "w") as stream:
        yield stream
    os.close(master)


@pytest.mark.parametrize(
    ("flag", "on_terminal", "wanted"),
    [
        (None, True, True),  # default: a terminal gets a bar
        (None, False, False),  # ... a log file or a pipe does not
        (True, False, True),  # --progress
        (False, True, False),  # --no-progress
    ],
)
def test_a_bar_by_default_only_on_a_terminal(
    terminal: IO[str], flag: bool | None, on_terminal: bool, wanted: bool
) -> None:
    stream: IO[str] = terminal if on_terminal else io.StringIO()
    assert progress_enabled(flag, stream) is wanted


def test_the_bar_counts_finished_units_with_rate_and_eta() -> None:
    out = io.StringIO()
    with progress(10, unit="image", desc="eval", enabled=True, stream=out, min_interval=0) as bar:
        bar.update(4, 10)
        bar.update(8, 10)
        bar.update(8, 10)  # nothing new finished: no step
        bar.update(10, 10)
        bar.stage("eval (scoring)")
    frames = [f for f in re.split(r"[\r\n]", out.getvalue()) if f.strip()]
    counts = [m.group(1) for f in frames if (m := re.search(r"\| (\d+)/10 \[", f))]
    assert counts[0] == "0" and counts[-1] == "10"
    assert [int(c) for c in counts] == sorted(int(c) for c in counts)
    assert {"4", "8", "10"} <= set(counts)
    assert re.search(r"4/10 \[\d\d:\d\d<\d\d:\d\d", out.getvalue())  # elapsed < ETA
    assert frames[-1].startswith("eval (scoring): 100%")
    assert bar.done == 10


def test_disabled_writes_nothing_and_still_sums_up() -> None:
    out = io.StringIO()
    with progress(3, unit="image", desc="eval", enabled=False, stream=out) as bar:
        bar.update(1)
        bar.update(3)
    assert out.getvalue() == ""
    summary = bar.summary(detections=12, AP50=0.42)
    assert re.fullmatch(
        r"3 images in \d+\.\d s \(\d+\.\d images/s\) detections=12 AP50=0.42", summary
    )


def test_summary_of_one_unit_is_singular() -> None:
    bar = Progress(1, unit="image", desc="x", enabled=False)
    bar.update(1)
    assert bar.summary().startswith("1 image in ")
