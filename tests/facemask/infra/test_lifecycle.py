"""facemask.infra.lifecycle.stop_on_signals: the one signal handling of the processes."""

from __future__ import annotations

import logging
import os
import signal
import threading

from facemask.infra.lifecycle import stop_on_signals

logger = logging.getLogger(__name__)


def test_sigterm_sets_the_event_calls_back_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    called: list[bool] = []
    with stop_on_signals(logger, on_stop=lambda: called.append(True)) as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(10)
        assert called == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigint_too() -> None:
    stop = stop_on_signals(logger)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(10)
    finally:
        stop.restore()


def test_off_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    made = []
    thread = threading.Thread(target=lambda: made.append(stop_on_signals(logger)))
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) is before
    assert not made[0].is_set()
    made[0].set()  # whoever holds it can still stop
    assert made[0].is_set()
