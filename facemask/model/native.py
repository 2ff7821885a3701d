"""Loading the native ML libraries quietly: the one place that silences TensorFlow's and
LiteRT's start-up banners for every command and service.

``TF_CPP_MIN_LOG_LEVEL`` governs TensorFlow's C++ logging. This module sets it to ``2``
(errors only; an explicit value in the environment wins) before TensorFlow is imported.
But some lines ignore it: TensorFlow 2.17+ logs "oneDNN custom operations are on" from a
static initialiser, before absl's logging is set up, behind absl's "All log messages before
absl::InitializeLog() is called are written to STDERR" - twice, once per shared library -
and LiteRT prints "Created TensorFlow Lite XNNPACK delegate for CPU" when an interpreter
allocates its tensors. :func:`banners_filtered` drops exactly those known INFO lines from
file descriptor 2 while the library loads; every other line (a warning, an error, a fatal
message before an abort) passes through. With ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is
filtered, so everything TensorFlow says can still be seen. Python-side, the ``absl``
logger (the TFLite converter's INFO lines) gets level WARNING unless it has a level of its
own.

The filter is a child process (the running Python, isolated: ``-I -S``) reading a pipe
that replaces descriptor 2, so C and C++ writes are filtered too, and whatever the library
wrote before a crash inside the block still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "2"
"""TensorFlow's C++ log level unless the environment sets one: errors and fatals only."""

BANNERS: tuple[str, ...] = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"\S.*\bport\.cc:\d+\] oneDNN custom operations are on\. .*",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
)
"""Full lines (regular expressions) the libraries print at start-up whatever the log level;
each is informational."""
BANNER_RE = re.compile("^(?:" + "|".join(BANNERS) + r")\r?\n?$")

# The filter process: stdin (the pipe at descriptor 2) -> stdout (the real stderr), minus
# banner lines. Written for `python -I -S -c`: no site packages, no project imports.
_FILTER_SOURCE = """\
import re, sys
banner = re.compile(sys.argv[1].encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not banner.match(line):
        out.write(line)
        out.flush()
"""
_FILTER_EXIT_TIMEOUT_S = 5.0


def filtering_enabled() -> bool:
    """Whether banners are dropped: unless ``TF_CPP_MIN_LOG_LEVEL`` asks for INFO (``0``)."""
    return os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL).strip() not in ("", "0")


@contextlib.contextmanager
def banners_filtered() -> Iterator[None]:
    """Drop :data:`BANNERS` lines written to descriptor 2 (by any code) inside the block.

    Everything else written there passes through in order, and is out by the time the
    block ends. A no-op when :func:`filtering_enabled` is false or the filter cannot start
    (no descriptor 2, no interpreter to run): then the lines simply show.
    """
    if not filtering_enabled():
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER_SOURCE, BANNER_RE.pattern],
            stdin=subprocess.PIPE,
            stdout=saved,
            stderr=saved,
        )
    except OSError as exc:
        os.close(saved)
        logger.debug("cannot start the banner filter", extra={"error": str(exc)})
        yield
        return
    assert proc.stdin is not None
    os.dup2(proc.stdin.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # also drops this process's last write end of the pipe at 2
        proc.stdin.close()
        try:
            proc.wait(timeout=_FILTER_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # a child of ours inherited the pipe: let it be
            logger.debug("the banner filter is still reading", extra={"pid": proc.pid})
        os.close(saved)


def quiet_absl_logging() -> None:
    """``absl`` (TensorFlow's Python-side logger) at WARNING, unless it has a level of its
    own or INFO is asked for (``TF_CPP_MIN_LOG_LEVEL=0``)."""
    absl = logging.getLogger("absl")
    if filtering_enabled() and absl.level == logging.NOTSET:
        absl.setLevel(logging.WARNING)


def import_tensorflow() -> Any:
    """``import tensorflow``, quietly (see the module docstring). Raises ``ImportError``
    when it is not installed."""
    os.environ.setdefault(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    quiet_absl_logging()
    with banners_filtered():
        import tensorflow as tf
    return tf
