"""TensorFlow's and LiteRT's start-up banners stay off stderr; nothing else does.

The filter works on file descriptor 2, so each case runs in a child process that writes
there with ``os.write`` (what C and C++ code does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facemask.model.native import BANNER_RE
from tests.fixtures.paths import REPO_ROOT, require, require_module

# What TensorFlow 2.21 and LiteRT print at start-up (a real capture), and the kinds of
# line that must pass: a C++ warning, an error, a Python line, a line without newline.
BANNER_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796052680.746207   30570 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off "
    "errors from different computation orders. To turn them off, set the environment "
    "variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "2026-01-30 22:44:42.456316: I tensorflow/core/util/port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
REAL_LINES = [
    "W0000 00:00:1796052876.793939    2148 tf_tfl_flatbuffer_helpers.cc:364] Ignored "
    "output_format.",
    "E0000 00:00:1796052876.793939    2148 cuda_executor.cc:1] failed call to cuInit",
    "F0000 00:00:1796052876.793939    2148 cpu_feature_guard.cc:1] The TensorFlow library "
    "was compiled to use AVX instructions, but these aren't available on your machine.",
    "WARNING: some other notice mentioning oneDNN custom operations are on",
    "Traceback (most recent call last):",
]


def _child(body: str, level: str | None) -> subprocess.CompletedProcess[bytes]:
    """Run ``body`` with ``banners_filtered`` imported, ``TF_CPP_MIN_LOG_LEVEL=level``
    (None: unset)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = "import os, sys\nfrom facemask.model.native import banners_filtered\n" + body
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("line", BANNER_LINES)
def test_banner_patterns_match_the_banners(line: str) -> None:
    assert BANNER_RE.match(line + "\n")


@pytest.mark.parametrize("line", REAL_LINES)
def test_banner_patterns_leave_real_lines_alone(line: str) -> None:
    assert not BANNER_RE.match(line + "\n")


@pytest.mark.parametrize(
    ("level", "banners_shown"), [(None, False), ("2", False), ("1", False), ("0", True)]
)
def test_only_banners_are_dropped_and_order_is_kept(level: str | None, banners_shown: bool) -> None:
    lines = [line for pair in zip(BANNER_LINES, REAL_LINES, strict=False) for line in pair]
    body = textwrap.dedent(
        f"""
        print("before", file=sys.stderr, flush=True)
        with banners_filtered():
            for line in {lines!r}:
                os.write(2, line.encode() + b"\\n")
            print("python inside", file=sys.stderr)
            os.write(2, b"no newline at the end")
        print("", file=sys.stderr)
        print("after", file=sys.stderr, flush=True)
        """
    )
    result = _child(body, level)
    assert result.returncode == 0, result.stderr
    shown = [line for line in lines if banners_shown or line not in BANNER_LINES]
    expected = ["before", *shown, "python inside", "no newline at the end", "after"]
    assert result.stderr.decode().splitlines() == expected


def test_what_was_written_before_a_crash_still_shows() -> None:
    # A fatal message right before abort() (TensorFlow on a CPU without AVX) must not be
    # lost in the filter: it runs in its own process, which drains the pipe.
    result = _child(
        textwrap.dedent(
            f"""
            with banners_filtered():
                os.write(2, {BANNER_LINES[1]!r}.encode() + b"\\n")
                os.write(2, {REAL_LINES[2]!r}.encode() + b"\\n")
                os.abort()
            """
        ),
        "2",
    )
    assert result.returncode == -signal.SIGABRT
    assert result.stderr.decode().splitlines()[:1] == [REAL_LINES[2]]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize(
    ("runtime", "level", "banner_expected"),
    [("tensorflow", None, False), ("tflite", None, False), ("tensorflow", "0", True)],
)
def test_detect_prints_no_banner(
    samples_dir: Path, runtime: str, level: str | None, banner_expected: bool
) -> None:
    require(samples_dir / "demo2.jpg", "sample image")
    require_module("ai_edge_litert" if runtime == "tflite" else "tensorflow")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level  # INFO asked for: the banners are still there
    sample = str(samples_dir / "demo2.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "facemask", "detect", "--runtime", runtime, sample],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"label": "mask"' in result.stdout
    banners = [line for line in result.stderr.splitlines() if BANNER_RE.match(line)]
    assert bool(banners) is banner_expected, result.stderr
