"""Background workers: one daemon thread running a loop, stopped cleanly.

A :class:`Worker` runs ``target(worker)`` in its own thread. The target loops until
``worker.stopping``; it sleeps with :meth:`Worker.wait` (returns early on a stop or a
:meth:`Worker.wake`) so a stop never waits out a long sleep. :meth:`Worker.stop` asks it
to stop and joins it with a timeout. A target that raises is logged with its traceback
and kept in :attr:`Worker.error`: ``alive`` turns false and ``failed`` true, so a health
check sees the death instead of a thread that silently vanished.

Supervision (:mod:`facemask.infra.watchdog`): :meth:`Worker.restart` runs the same target
again in a fresh thread after a death; :func:`adopt_workers` hands every worker created
inside a ``with`` block (by the service itself or by the library classes it builds) to a
supervisor, so no background loop of a service runs unwatched.

:meth:`Worker.every` is the periodic form (heartbeats, gauges): a failing tick is logged
and counted, and the loop goes on; ticks started and finished are counted, so a tick that
hangs (a frozen Redis) can be noticed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

logger = logging.getLogger(__name__)

_ADOPTER: ContextVar[Callable[[Worker], object] | None] = ContextVar(
    "facemask_worker_adopter", default=None
)


@contextlib.contextmanager
def adopt_workers(adopter: Callable[[Worker], object]) -> Iterator[None]:
    """Every :class:`Worker` created inside the block (in this thread) is passed to
    ``adopter`` (a supervisor's ``adopt``) as soon as it exists."""
    token = _ADOPTER.set(adopter)
    try:
        yield
    finally:
        _ADOPTER.reset(token)


class Worker:
    """One background thread (see the module docstring)."""

    def __init__(
        self,
        name: str,
        target: Callable[[Worker], object],
        *,
        log: logging.Logger | None = None,
        periodic: bool = False,
    ) -> None:
        self.name = name
        self.periodic = periodic
        """Made by :meth:`every`: :attr:`ticks_started` / :attr:`ticks_done` count its ticks
        (a tick that never ends is a stall a supervisor sees)."""
        self.ticks_started = 0
        self.ticks_done = 0
        self._target = target
        self._log = log or logger
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.error: BaseException | None = None
        """What ended the loop, when it raised."""
        self.errors = 0
        """Failed ticks (periodic workers)."""
        self.last_error: BaseException | None = None
        """The last failed tick's exception (periodic workers)."""
        self.restarts = 0
        """How often :meth:`restart` ran the target again."""
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        adopter = _ADOPTER.get()
        if adopter is not None:
            adopter(self)

    @classmethod
    def every(
        cls,
        name: str,
        interval: float,
        tick: Callable[[], object],
        *,
        immediate: bool = True,
        log: logging.Logger | None = None,
    ) -> Worker:
        """A worker calling ``tick()`` every ``interval`` seconds (first at once when
        ``immediate``); :meth:`wake` runs the next tick early. A tick that raises is logged
        and counted in :attr:`errors`; the next tick runs as planned."""
        worker_log = log or logger

        def loop(worker: Worker) -> None:
            if not immediate and worker.wait(interval):
                return
            while not worker.stopping:
                worker.ticks_started += 1
                try:
                    tick()
                except Exception as exc:
                    worker.errors += 1
                    worker.last_error = exc
                    worker_log.exception("periodic task failed", extra={"worker": name})
                finally:
                    worker.ticks_done += 1
                if worker.wait(interval):
                    return

        return cls(name, loop, log=log, periodic=True)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> Worker:
        """Start the thread (once); returns the worker."""
        self._thread.start()
        return self

    def restart(self) -> bool:
        """Run the target again in a new thread after the loop ended (a death, or a return
        while not stopping); False (nothing done) while it runs, before :meth:`start` or
        once a stop was requested. :attr:`error` is cleared (the last one stays in
        :attr:`last_error`)."""
        if self._thread.is_alive() or self._thread.ident is None or self.stopping:
            return False
        if self.error is not None:
            self.last_error = self.error
        self.error = None
        self.restarts += 1
        self._wake.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        return True

    def request_stop(self) -> None:
        """Ask the loop to stop (returns at once); a :meth:`wait` in progress returns."""
        self.stop_event.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; True when it has ended
        (or never started)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """:meth:`request_stop`, then :meth:`join`; True when the thread has ended."""
        self.request_stop()
        ended = self.join(timeout)
        if not ended:
            self._log.warning("worker did not stop in time", extra={"worker": self.name})
        return ended

    def wake(self) -> None:
        """End the :meth:`wait` in progress (or the next one) early."""
        self._wake.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less after a :meth:`wake` or a stop request; True when
        the worker is stopping."""
        if self.stop_event.is_set():
            return True
        if self._wake.wait(max(0.0, seconds)):
            self._wake.clear()
        return self.stop_event.is_set()

    # -- state -----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self.stop_event.is_set()

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._thread.ident is not None

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    @property
    def failed(self) -> bool:
        """True when the loop ended with an exception (see :attr:`error`)."""
        return self.error is not None

    def _main(self) -> None:
        try:
            self._target(self)
        except BaseException as exc:
            self.error = exc
            self._log.exception("worker died", extra={"worker": self.name})
