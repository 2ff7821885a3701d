"""Process plumbing shared by the services' ``__main__`` modules."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from facemask.infra.helpformat import CommandParser
from facemask.infra.log import LOG_LEVEL_HELP
from facemask.infra.watchdog import EXIT_UNHEALTHY, Supervisor

logger = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class StopEvent(threading.Event):
    """Set by SIGTERM / SIGINT (see :func:`stop_on_signals`); ``restore()`` (or leaving a
    ``with`` block) puts the previous handlers back."""

    def __init__(self) -> None:
        super().__init__()
        self._previous: dict[int, _Handler] = {}

    def restore(self) -> None:
        """Reinstall the handlers that were there before."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(signum, handler)

    def __enter__(self) -> StopEvent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def stop_on_signals(
    logger: logging.Logger,
    on_stop: Callable[[], None] | None = None,
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> StopEvent:
    """The one signal handling of the project's processes (the services, ``facemask run``):
    an event set by SIGTERM or SIGINT (logged), for a graceful stop; ``on_stop`` is called
    too. Handlers can only be installed in the main thread: elsewhere (a service driven by
    a test) nothing is installed and the event is only set by whoever holds it."""
    stop = StopEvent()
    if threading.current_thread() is not threading.main_thread():
        return stop

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()
        if on_stop is not None:
            on_stop()

    for signum in signals:
        stop._previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)
    return stop


def module_main(
    prog: str,
    description: str | None,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    *,
    examples: Sequence[str] | None = None,
) -> int:
    """``python -m services.X``: the same options, behaviour and ``--help`` (defaults,
    ``examples``) as ``facemask X``."""
    parser = CommandParser(prog=prog, description=description, examples=examples)
    parser.add_argument("--log-level", default=None, help=LOG_LEVEL_HELP)
    configure(parser)
    return run(parser.parse_args(argv))


def serve_supervised(
    supervisor: Supervisor,
    stop: threading.Event,
    stop_service: Callable[[], bool],
) -> int:
    """Wait for ``stop`` (a signal) or a fatal verdict of ``supervisor``, then stop the
    service (``stop_service()``: True when it drained cleanly). The process's exit code:
    0 clean, 1 unclean, :data:`~facemask.infra.watchdog.EXIT_UNHEALTHY` (70) after a
    verdict, so the orchestrator restarts it."""
    supervisor.on_fatal(lambda _reason: stop.set())
    while not stop.wait(0.5):
        pass
    if supervisor.verdict is not None:
        stop_service()
        logger.critical(
            "exiting: the supervisor declared the service unhealthy",
            extra={"reason": supervisor.verdict, "exit_code": EXIT_UNHEALTHY},
        )
        return EXIT_UNHEALTHY
    return 0 if stop_service() else 1
