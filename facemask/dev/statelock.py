"""One ``facemask run`` per state directory: an exclusive lock on ``<dir>/run.lock``.

Two launchers on one state directory would share its SQLite database, its Redis files
and its ingest configuration files. :class:`StateLock` takes an exclusive
``fcntl.flock`` on a lock file in the directory before anything is started, and writes
the holder's pid and start time into it, so that a second launcher can say who holds it
(:class:`StateDirLockedError`). The lock belongs to the open file description: it goes
away when the holder exits, however it exits (``SIGKILL`` included), so a crash never
leaves a stale lock behind. The descriptor is not inherited by child processes (Python
opens files non-inheritable), so a child that outlives the launcher does not keep the
lock. The lock file itself is left in place (removing it would let a third launcher
lock a new file while a second one still waits on the old one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "run.lock"


class StateDirLockedError(RuntimeError):
    """Another process holds the lock of the state directory."""

    def __init__(self, directory: Path, pid: int | None, started: str | None) -> None:
        self.directory = directory
        self.pid = pid
        self.started = started
        who = f"pid {pid}" if pid else "pid unknown"
        since = f", started {started}" if started else ""
        super().__init__(f"{directory} is in use by another facemask run ({who}{since})")


class StateLock:
    """The exclusive lock of one state directory (a context manager)."""

    def __init__(self, directory: Path, name: str = LOCK_FILE) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True between :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> StateLock:
        """Take the lock without waiting, and record this process as its holder; raise
        :class:`StateDirLockedError` (naming the holder) when another process has it."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirLockedError(
                self.directory, _int_or_none(holder.get("pid")), _str_or_none(holder.get("started"))
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (also done by the kernel when the process exits)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no holder any more
        os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    """The holder's record ({} when it is not written yet or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
