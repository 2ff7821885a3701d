"""Supervision of a service's background loops: no silent death, no silent stall.

One :class:`Supervisor` per service watches three kinds of things, from one periodic
check (:meth:`Supervisor.check`, run every ``interval`` seconds by its own
:class:`~facemask.infra.worker.Worker`; tests call it with an injected clock):

* **loops** - every :class:`~facemask.infra.worker.Worker` of the service (adopted one by
  one with :meth:`Supervisor.adopt`, or all those created inside
  :meth:`Supervisor.adopting`) and plain threads (:meth:`Supervisor.watch_thread`). A
  loop that ended while no stop was requested (it raised, or returned) is logged and
  restarted after a back-off delay (:class:`~facemask.infra.backoff.Backoff`); more than
  ``restart_limit`` deaths within ``restart_window`` seconds (or a death of a loop that
  cannot be restarted) is the **fatal verdict**: the service is unhealthy for good and
  its process must exit with :data:`EXIT_UNHEALTHY` so the orchestrator restarts it.
  A loop whose policy allows it (``may_finish``: a camera reading a file that ended) may
  return. A periodic worker (:meth:`~facemask.infra.worker.Worker.every`) also gets a
  progress watch of its own name: a tick that hangs for ``stall_timeout`` (a Redis
  command on a frozen server) is a stall.
* **progress** (:meth:`Supervisor.watch_progress`) - a monotonic count of finished work
  (``done``), optionally a count of work taken (``taken``) and the work pending now
  (``pending``: in flight, queued). Work is *pending* when ``pending() > 0`` or more was
  taken since the last finished piece. Progress is *stalled* when work was pending for
  ``stall_timeout`` seconds with no finished piece; idle (nothing pending) is never a
  stall. A stall is logged once when it starts (with what is pending) and once when it
  ends, counted (``facemask_<service>_stalls_total``) and shown
  (``facemask_<service>_stalled``); readiness comes back by itself with progress.
  With ``stall_exit`` > 0, a stall that lasts that long while every condition holds (the
  work is stuck in this process, not waiting for Redis) is a fatal verdict too.
* **conditions** (:meth:`Supervisor.require`) - checks readiness depends on (Redis
  reachable, consumer groups present, the model loaded).

:attr:`Supervisor.ready` is the one truth behind a service's readiness: no fatal verdict,
every loop running, no readiness-relevant stall, every condition true. Its changes are
pushed to the ``on_ready`` callbacks (gRPC health, the ``*_ready`` gauge) and logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field

from facemask.infra.backoff import Backoff
from facemask.infra.worker import Worker, adopt_workers

logger = logging.getLogger(__name__)

EXIT_UNHEALTHY = 70
"""Process exit status after a fatal supervisor verdict (``EX_SOFTWARE``)."""


class SupervisionSettings(BaseModel):
    """Settings of the supervisor, mixed into every service's settings class. The default
    ``stall_timeout`` plus one ``watchdog_interval`` keeps a stall noticed within 10 s."""

    stall_timeout: float = Field(
        8.0,
        gt=0.0,
        le=3600.0,
        description="seconds work may stay pending without progress before the service is "
        "not ready (a stall: logged, counted, readiness false until progress resumes)",
    )
    stall_exit: float = Field(
        0.0,
        ge=0.0,
        le=86400.0,
        description="seconds a stall may last while Redis is fine before the process exits "
        "70 so the orchestrator restarts it (0: never)",
    )
    restart_limit: int = Field(
        3,
        ge=0,
        le=100,
        description="restarts of a dead background loop within restart_window before the "
        "service gives up (not ready, exit 70)",
    )
    restart_window: float = Field(
        300.0, gt=0.0, le=86400.0, description="seconds over which restart_limit counts deaths"
    )
    watchdog_interval: float = Field(
        1.0, gt=0.0, le=60.0, description="seconds between two supervisor checks"
    )


class SupervisorMetrics:
    """The supervisor's metrics of one service (``facemask_<service>_...``)."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        prefix = f"facemask_{service}"
        self.stalls = Counter(
            f"{prefix}_stalls",
            "Stalls: work pending without progress for stall_timeout seconds.",
            ["watch"],
            registry=registry,
        )
        self.stalled = Gauge(
            f"{prefix}_stalled",
            "1 while the watched work makes no progress (see stall_timeout).",
            ["watch"],
            registry=registry,
        )
        self.loop_deaths = Counter(
            f"{prefix}_loop_deaths",
            "Background loops that ended unexpectedly (raised or returned).",
            ["loop"],
            registry=registry,
        )
        self.loop_restarts = Counter(
            f"{prefix}_loop_restarts",
            "Background loops restarted by the supervisor.",
            ["loop"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """What happens when a loop ends unexpectedly."""

    restart: bool = True
    """Restart it (False: its death is a fatal verdict at once)."""
    may_finish: bool = False
    """A return without an error is a normal end (a camera whose file ended)."""
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    before_restart: Callable[[], object] | None = None
    """Run before each restart (a consumer reloads its committed state); when it raises,
    the restart counts as one more death."""


class _Loop:
    """One watched loop: a Worker, or a plain thread seen through callables."""

    def __init__(
        self,
        name: str,
        policy: RestartPolicy,
        *,
        worker: Worker | None = None,
        alive: Callable[[], bool] | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.worker = worker
        self._alive = alive
        self._stopping = stopping
        self.deaths: list[float] = []
        self.restart_at: float | None = None
        self.backoff = Backoff(policy.backoff_initial, policy.backoff_max, jitter=0.0)
        self.finished = False
        self.ever_alive = False

    def started(self) -> bool:
        if self.worker is not None:
            return self.worker.started
        return self.ever_alive

    def alive(self) -> bool:
        up = self.worker.alive if self.worker is not None else bool(self._alive and self._alive())
        self.ever_alive |= up
        return up

    def stopping(self) -> bool:
        if self.worker is not None:
            return self.worker.stopping
        return bool(self._stopping and self._stopping())

    def error(self) -> BaseException | None:
        return self.worker.error if self.worker is not None else None

    def restart(self) -> bool:
        return self.worker.restart() if self.worker is not None else False


@dataclass(slots=True)
class ProgressWatch:
    """Progress of one kind of work (see :meth:`Supervisor.watch_progress`)."""

    name: str
    done: Callable[[], int]
    pending: Callable[[], int]
    taken: Callable[[], int] | None = None
    readiness: bool = True
    """A stall makes the service not ready (False: only logged, counted and shown)."""
    last_done: int | None = None
    taken_at_progress: int = 0
    since: float = 0.0
    """When the work last progressed (or was last idle)."""
    stalled_since: float | None = None

    def stalled(self) -> bool:
        return self.stalled_since is not None


class Supervisor:
    """See the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        stall_timeout: float = 8.0,
        stall_exit: float = 0.0,
        restart_limit: int = 3,
        restart_window: float = 300.0,
        interval: float = 1.0,
        metrics: SupervisorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.stall_timeout = stall_timeout
        self.stall_exit = stall_exit
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self.interval = interval
        self.metrics = metrics
        self.clock = clock
        self.verdict: str | None = None
        """Why the service gave up (None: it has not)."""
        self.fatal = threading.Event()
        """Set with the fatal verdict (see :meth:`on_fatal` for acting on it)."""
        self._loops: dict[str, _Loop] = {}
        self._watches: dict[str, ProgressWatch] = {}
        self._conditions: dict[str, Callable[[], bool]] = {}
        self._failed_conditions: frozenset[str] = frozenset()
        self._ever_true: set[str] = set()  # conditions that held at least once
        self._late: set[str] = set()  # never true and warned about after the start grace
        self._started_at: float | None = None
        self._on_ready: list[Callable[[bool], object]] = []
        self._on_fatal: list[Callable[[str], object]] = []
        self._ready: bool | None = None
        self._lock = threading.RLock()
        self._worker: Worker | None = None

    @classmethod
    def from_settings(
        cls,
        service: str,
        settings: SupervisionSettings,
        metrics: SupervisorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Supervisor:
        """A supervisor configured by a service's :class:`SupervisionSettings`."""
        return cls(
            service,
            stall_timeout=settings.stall_timeout,
            stall_exit=settings.stall_exit,
            restart_limit=settings.restart_limit,
            restart_window=settings.restart_window,
            interval=settings.watchdog_interval,
            metrics=metrics,
            clock=clock,
        )

    # -- what is watched -------------------------------------------------------------

    def adopt(self, worker: Worker, policy: RestartPolicy | None = None) -> Worker:
        """Watch ``worker`` (restarted per ``policy``); returns it."""
        with self._lock:
            name = self._unique(worker.name)
            self._loops[name] = _Loop(name, policy or RestartPolicy(), worker=worker)
        if worker.periodic:  # a tick that hangs is a stall
            self.watch_progress(
                name,
                done=lambda: worker.ticks_done,
                pending=lambda: worker.ticks_started - worker.ticks_done,
            )
        return worker

    @contextlib.contextmanager
    def adopting(self, policy: RestartPolicy | None = None) -> Iterator[None]:
        """Adopt every Worker created inside the block (see :func:`adopt_workers`)."""
        with adopt_workers(lambda w: self.adopt(w, policy)):
            yield

    def set_policy(self, worker: Worker, policy: RestartPolicy) -> None:
        """Change the policy of an adopted worker (adopting it when it is not yet)."""
        with self._lock:
            for loop in self._loops.values():
                if loop.worker is worker:
                    loop.policy = policy
                    return
        self.adopt(worker, policy)

    def watch_thread(
        self,
        name: str,
        alive: Callable[[], bool],
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        """Watch a plain thread that cannot be restarted: once it was seen alive, its end
        while ``stopping()`` is false is a fatal verdict."""
        with self._lock:
            self._loops[self._unique(name)] = _Loop(
                name, RestartPolicy(restart=False), alive=alive, stopping=stopping
            )

    def watch_progress(
        self,
        name: str,
        *,
        done: Callable[[], int],
        pending: Callable[[], int] = lambda: 0,
        taken: Callable[[], int] | None = None,
        readiness: bool = True,
    ) -> ProgressWatch:
        """Watch the progress of one kind of work (see the module docstring)."""
        watch = ProgressWatch(name, done, pending, taken, readiness)
        with self._lock:
            self._watches[name] = watch
        if self.metrics is not None:
            self.metrics.stalled.labels(name).set(0)
            self.metrics.stalls.labels(name)
        return watch

    def require(self, name: str, check: Callable[[], bool]) -> None:
        """A condition readiness depends on (a check that raises counts as false)."""
        with self._lock:
            self._conditions[name] = check

    def on_ready(self, callback: Callable[[bool], object]) -> None:
        """Call ``callback(ready)`` on every change of :attr:`ready` (and once now, when
        a check already ran)."""
        self._on_ready.append(callback)
        if self._ready is not None:
            callback(self._ready)

    def on_fatal(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(reason)`` once, with the fatal verdict."""
        self._on_fatal.append(callback)
        if self.verdict is not None:
            callback(self.verdict)

    def _unique(self, name: str) -> str:
        out, n = name, 1
        while out in self._loops:
            n += 1
            out = f"{name}-{n}"
        return out

    # -- running ---------------------------------------------------------------------

    def start(self) -> Supervisor:
        """One check now, then one every ``interval`` seconds in a thread."""
        self.check()
        with adopt_workers(lambda _worker: None):  # not watched by itself
            self._worker = Worker.every(
                f"{self.service}-watchdog", self.interval, self.check, immediate=False, log=logger
            )
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop checking (first step of a graceful stop: stopping loops are no deaths)."""
        if self._worker is not None:
            self._worker.stop(timeout)

    def check(self) -> bool:
        """One pass over loops, progress and conditions; returns :attr:`ready`."""
        with self._lock:
            now = self.clock()
            for loop in list(self._loops.values()):
                self._check_loop(loop, now)
            conditions_ok = self._check_conditions(now)
            for watch in list(self._watches.values()):
                self._check_progress(watch, now, conditions_ok)
            ready = self._evaluate()
        return ready

    # -- state -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The truth behind readiness (as of the last check)."""
        return bool(self._ready)

    def problems(self) -> dict[str, str]:
        """What keeps the service from being ready, by loop / watch / condition."""
        with self._lock:
            out: dict[str, str] = {}
            if self.verdict is not None:
                out["verdict"] = self.verdict
            for loop in self._loops.values():
                if loop.restart_at is not None:
                    out[loop.name] = "dead, restarting"
            for watch in self._watches.values():
                if watch.stalled() and watch.readiness:
                    out[watch.name] = "stalled"
            for name in self._failed_conditions:
                out[name] = "false"
            return out

    def stalled(self) -> list[str]:
        """Names of the watches stalled now."""
        with self._lock:
            return [w.name for w in self._watches.values() if w.stalled()]

    def loops(self) -> list[str]:
        """Names of the watched loops."""
        with self._lock:
            return list(self._loops)

    # -- internals -------------------------------------------------------------------

    def _check_loop(self, loop: _Loop, now: float) -> None:
        up = loop.alive()
        if up or loop.finished or loop.stopping() or not loop.started():
            return
        if loop.restart_at is not None:  # dead, a restart is planned
            if now >= loop.restart_at:
                loop.restart_at = None
                hook = loop.policy.before_restart
                if hook is not None:
                    try:
                        hook()
                    except Exception:
                        logger.exception("cannot prepare a restart", extra={"loop": loop.name})
                        return  # the next check counts one more death
                if loop.restart():
                    if self.metrics is not None:
                        self.metrics.loop_restarts.labels(loop.name).inc()
                    logger.warning(
                        "background loop restarted",
                        extra={"service": self.service, "loop": loop.name},
                    )
            return
        error = loop.error()
        if error is None and loop.policy.may_finish and loop.worker is not None:
            loop.finished = True
            logger.info("background loop finished", extra={"loop": loop.name})
            return
        loop.deaths = [t for t in loop.deaths if now - t < self.restart_window] + [now]
        if self.metrics is not None:
            self.metrics.loop_deaths.labels(loop.name).inc()
        cause = repr(error) if error is not None else "returned"
        if not loop.policy.restart or loop.worker is None:
            self._give_up(f"{loop.name} ended ({cause}) and cannot be restarted")
            return
        if len(loop.deaths) > self.restart_limit:
            self._give_up(
                f"{loop.name} died {len(loop.deaths)} times within "
                f"{self.restart_window:g} s (last: {cause})"
            )
            return
        delay = loop.backoff.delay(len(loop.deaths))
        loop.restart_at = now + delay
        logger.error(
            "background loop died; restarting it",
            extra={
                "service": self.service,
                "loop": loop.name,
                "error": cause,
                "deaths": len(loop.deaths),
                "restart_in_s": round(delay, 2),
            },
        )

    def _check_conditions(self, now: float) -> bool:
        """Evaluate the readiness conditions. A condition that has not held yet since the
        start (Redis still connecting) is only logged at INFO; it is a WARNING when a
        condition that held turns false, or one still false ``stall_timeout`` after the
        first check."""
        if self._started_at is None:
            self._started_at = now
        held_before = set(self._ever_true)
        failed = set()
        for name, check in self._conditions.items():
            try:
                ok = bool(check())
            except Exception:
                ok = False
            if ok:
                self._ever_true.add(name)
            else:
                failed.add(name)
        for name in failed - self._failed_conditions:
            if name in held_before:
                logger.warning("readiness condition false", extra={"condition": name})
            else:
                logger.info("waiting for readiness condition", extra={"condition": name})
        for name in self._failed_conditions - failed:
            again = " again" if name in held_before else ""
            logger.info(f"readiness condition true{again}", extra={"condition": name})
        for name in failed - self._ever_true - self._late:
            if now - self._started_at >= self.stall_timeout:
                self._late.add(name)
                logger.warning(
                    "readiness condition still false after start",
                    extra={"condition": name, "seconds": round(now - self._started_at, 2)},
                )
        self._failed_conditions = frozenset(failed)
        return not failed

    def _check_progress(self, watch: ProgressWatch, now: float, conditions_ok: bool) -> None:
        try:
            done = int(watch.done())
            pending = int(watch.pending())
            taken = int(watch.taken()) if watch.taken is not None else 0
        except Exception:
            logger.exception("progress probe failed", extra={"watch": watch.name})
            return
        if watch.last_done is None or done != watch.last_done:
            watch.last_done = done
            watch.taken_at_progress = taken
            watch.since = now
            if watch.stalled_since is not None:
                self._stall_ended(watch, now, "progress")
            return
        new = max(0, taken - watch.taken_at_progress)
        if pending <= 0 and new == 0:
            watch.since = now  # idle: no stall clock runs
            if watch.stalled_since is not None:
                self._stall_ended(watch, now, "idle")
            return
        if watch.stalled_since is None and now - watch.since >= self.stall_timeout:
            watch.stalled_since = now
            if self.metrics is not None:
                self.metrics.stalls.labels(watch.name).inc()
                self.metrics.stalled.labels(watch.name).set(1)
            logger.warning(
                "stall: work pending without progress",
                extra={
                    "service": self.service,
                    "watch": watch.name,
                    "seconds": round(now - watch.since, 2),
                    "done": done,
                    "pending": pending,
                    "taken_since_progress": new,
                },
            )
        if (
            watch.stalled_since is not None
            and self.stall_exit > 0
            and conditions_ok
            and now - watch.since >= self.stall_exit
        ):
            self._give_up(f"{watch.name} made no progress for {now - watch.since:.0f} s")

    def _stall_ended(self, watch: ProgressWatch, now: float, why: str) -> None:
        started = watch.stalled_since if watch.stalled_since is not None else now
        watch.stalled_since = None
        if self.metrics is not None:
            self.metrics.stalled.labels(watch.name).set(0)
        logger.info(
            "stall ended",
            extra={
                "service": self.service,
                "watch": watch.name,
                "how": why,
                "stalled_s": round(now - started, 2),
            },
        )

    def _give_up(self, reason: str) -> None:
        if self.verdict is not None:
            return
        self.verdict = reason
        logger.critical(
            "supervisor verdict: service unhealthy; the process must exit",
            extra={"service": self.service, "reason": reason, "exit_code": EXIT_UNHEALTHY},
        )
        self.fatal.set()
        for callback in self._on_fatal:
            try:
                callback(reason)
            except Exception:
                logger.exception("fatal-verdict callback failed")

    def _evaluate(self) -> bool:
        problems = self.problems()
        ready = not problems
        if ready != self._ready:
            previous, self._ready = self._ready, ready
            if previous is not None or not ready:
                # the first verdict (start-up, usually a connection still being made) is
                # INFO; the conditions warn themselves when they stay false too long
                log = logger.info if ready or previous is None else logger.warning
                log(
                    "service ready" if ready else "service not ready",
                    extra={"service": self.service, "problems": problems},
                )
            for callback in self._on_ready:
                try:
                    callback(ready)
                except Exception:
                    logger.exception("readiness callback failed")
        return ready
