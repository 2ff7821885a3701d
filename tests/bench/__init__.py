"""Smoke tests of the benchmarks: each runs ``python -m bench.X --quick`` once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.fixtures.paths import REPO_ROOT


def run_quick_bench(
    module: str,
    *args: str,
    drop_env: tuple[str, ...] = (),
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bench.<module> --quick ARGS`` from the repository root, without the
    environment variables starting with ``drop_env`` (a developer's service settings) and
    with ``extra_env``; fails the test unless it exits 0."""
    env = {k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))}
    env.update(extra_env or {})
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc
