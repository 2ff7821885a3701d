"""facemask.dev.statelock: one holder per state directory, named to the next comer, gone
with its process however it ends, never inherited by the holder's children. The holders
are real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facemask.dev.statelock import StateDirLockedError, StateLock
from facemask.dev.waiting import wait_until
from tests.fixtures.paths import REPO_ROOT

# Takes the lock of argv[1], optionally starts a child that outlives it (argv[2] ==
# "child": it prints the child's pid), says "locked" and waits to be killed.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from facemask.dev.statelock import StateLock
lock = StateLock(Path(sys.argv[1])).acquire()
if sys.argv[2] == "child":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    print(child.pid, flush=True)
print("locked", flush=True)
time.sleep(60)
"""


def _holder(directory: Path, mode: str = "alone") -> tuple[subprocess.Popen[str], int | None]:
    """A process holding the lock of ``directory`` (and the pid of its child, if any)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline()) if mode == "child" else None
    assert proc.stdout.readline().strip() == "locked"
    return proc, child


def _is_free(directory: Path) -> bool:
    try:
        StateLock(directory).acquire().release()
    except StateDirLockedError:
        return False
    return True


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, _ = _holder(state)
    try:
        with pytest.raises(StateDirLockedError) as caught:
            StateLock(state).acquire()
        assert caught.value.pid == proc.pid and caught.value.directory == state
        assert caught.value.started  # when it began, ISO 8601
        assert str(caught.value) == (
            f"{state} is in use by another facemask run "
            f"(pid {proc.pid}, started {caught.value.started})"
        )
        record = json.loads((state / "run.lock").read_text())
        assert record == {"pid": proc.pid, "started": caught.value.started}
        assert (state / "run.lock").stat().st_mode & 0o777 == 0o600
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_lock_goes_with_its_holder_however_it_ends(tmp_path: Path, how: int) -> None:
    state = tmp_path / "state"
    proc, _ = _holder(state)
    assert not _is_free(state)
    os.kill(proc.pid, how)
    assert proc.wait(10) == -how
    with StateLock(state) as lock:  # no stale lock (the file is still there)
        assert lock.held
        assert json.loads((state / "run.lock").read_text())["pid"] == os.getpid()
    assert not lock.held and (state / "run.lock").read_text() == ""


def test_a_child_that_outlives_the_holder_does_not_keep_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, child = _holder(state, "child")
    assert child is not None
    try:
        proc.kill()
        proc.wait(10)
        assert Path(f"/proc/{child}").exists()  # still running, in its own session
        assert _is_free(state)
    finally:
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{child}").exists(), 10, "the child reaped", 0.05)


def test_acquire_release_and_acquire_again_in_one_process(tmp_path: Path) -> None:
    lock = StateLock(tmp_path / "new" / "state")  # the directory is made
    assert not lock.held
    assert lock.acquire() is lock and lock.acquire() is lock and lock.held  # twice: a no-op
    other = StateLock(tmp_path / "new" / "state")
    with pytest.raises(StateDirLockedError):  # flock: a second open file is refused too
        other.acquire()
    lock.release()
    lock.release()  # twice is fine
    other.acquire().release()
    assert _is_free(tmp_path / "new" / "state")
