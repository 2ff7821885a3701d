"""The one way the project starts a long-running child process: ``facemask run``, the test
fixtures and the benchmarks all go through :class:`Supervisor`.

A :class:`ChildSpec` says what to run (argv, environment, working directory), how to tell
that it is ready (a :class:`Probe`: an HTTP URL answering 200, a gRPC health check saying
SERVING, a TCP port accepting connections, a line in its output, or any callable), where
its output goes (a log file, and/or the supervisor's stream with a per-child prefix such as
``inference  | ...``) and whether it is restarted when it dies.

* :meth:`Supervisor.start` starts a child (in its own session, so that stopping it also
  stops whatever it started); :meth:`Child.wait_ready` polls its probe and raises
  :class:`ChildExitedError` (with the exit status and the end of its output) when the child
  dies first.
* :meth:`Supervisor.stop_all` stops the children in reverse start order: SIGTERM, a grace
  period, then SIGKILL for the child's whole process group.
* :meth:`Supervisor.watch` (or :meth:`Supervisor.poll_once`, one step of it) restarts the
  children whose spec asks for it, with a capped exponential backoff (1, 2, 4 .. 30 s; the
  count resets once a child has run for a minute) - except a child that exits with one of
  its spec's ``fatal_exits`` (a configuration error) before it became ready: a restart
  cannot help, so it is given up on and recorded in :attr:`Supervisor.failures` (and
  :attr:`Supervisor.failed` is set) for the caller to stop.
* :meth:`Supervisor.wait_all_ready` waits for several children at once, through their
  restarts, until each is ready, one of them is given up on, or the caller cancels.

Every wait runs on the supervisor's ``clock`` and ``sleep`` (:func:`~facemask.dev.waiting.
wait_until`), so tests drive grace periods and backoffs with a fake clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from facemask.dev.waiting import Clock, Sleep, WaitTimeoutError, wait_until
from facemask.infra.backoff import Backoff

if TYPE_CHECKING:  # gRPC is imported on first use only
    from facemask.infra.client import ClientTLS

logger = logging.getLogger(__name__)

PREFIX_WIDTH = 10
RESTART_MAX_DELAY_S = 30.0
RESTART_BACKOFF = Backoff(1.0, RESTART_MAX_DELAY_S, jitter=0.0)
"""1, 2, 4 .. 30 s: exact (one supervisor, nothing to spread)."""
RESTART_RESET_AFTER_S = 60.0
TAIL_LINES = 400


def _ended(proc: subprocess.Popen[Any]) -> bool:
    """True once ``proc`` has exited, without reaping it (while it is a zombie its pid,
    hence its process group id, cannot be reused, so the group can still be signalled)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # not on every platform: reap
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else
        proc.poll()
        return True


def describe_exit(code: int | None) -> str:
    """``exit status 3``, ``signal SIGKILL`` or ``still running``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class ChildExitedError(RuntimeError):
    """A child ended while it was waited for (to become ready), or was given up on."""

    def __init__(self, name: str, returncode: int, tail: str = "") -> None:
        self.name = name
        self.returncode = returncode
        self.tail = tail
        message = f"{name} exited early with {describe_exit(returncode)}"
        super().__init__(f"{message}:\n{tail}" if tail else message)

    @property
    def error_line(self) -> str:
        """The line of its output that says why: the last one mentioning an error (a
        service's ``configuration error: ...``), else its last non-blank line ("" when it
        printed nothing)."""
        lines = [line.strip() for line in self.tail.splitlines() if line.strip()]
        for line in reversed(lines):
            if "error" in line.lower():
                return line
        return lines[-1] if lines else ""


# -- readiness probes -------------------------------------------------------------------------


class Probe(ABC):
    """How to tell that a child is ready. ``check`` is polled until it returns True."""

    what = "ready"
    needs_output = False  # True: the child's output must go through the supervisor

    def prepare(self, child: Child) -> None:  # noqa: B027 - a hook, empty by default
        """Called just before each (re)start of ``child``."""

    @abstractmethod
    def check(self, child: Child) -> bool:
        """True once the child is ready."""


class HttpProbe(Probe):
    """Ready when ``url`` answers 200."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self.what = f"{url} to answer 200"

    def check(self, child: Child) -> bool:
        return http_ok(self.url, self.timeout)


class GrpcHealthProbe(Probe):
    """Ready when the gRPC health service on ``host:port`` says SERVING for ``service``."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        service: str = "",
        timeout: float = 1.0,
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = f"{host}:{port}"
        self.service = service
        self.timeout = timeout
        self.tls = tls
        self.what = f"gRPC health SERVING on {self.target}"

    def check(self, child: Child) -> bool:
        status = grpc_health_status(self.target, self.service, self.timeout, tls=self.tls)
        return status == GRPC_SERVING


class TcpProbe(Probe):
    """Ready when ``host:port`` accepts a TCP connection."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.what = f"{host}:{port} to accept connections"

    def check(self, child: Child) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return True
        except OSError:
            return False


class LogLineProbe(Probe):
    """Ready once the child printed a line matching ``pattern`` (``re.search``) since its
    latest start. The matching line is kept in :attr:`line`."""

    needs_output = True

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.what = f"a line matching {pattern!r}"
        self.line: str | None = None
        self._seen = threading.Event()

    def prepare(self, child: Child) -> None:
        self._seen.clear()
        self.line = None
        child.add_line_listener(self._on_line)

    def _on_line(self, line: str) -> None:
        if not self._seen.is_set() and self.pattern.search(line):
            self.line = line
            self._seen.set()

    def check(self, child: Child) -> bool:
        return self._seen.is_set()


class CallableProbe(Probe):
    """Ready when ``fn()`` returns something truthy (``OSError`` counts as not ready)."""

    def __init__(self, fn: Callable[[], object], what: str = "ready") -> None:
        self.fn = fn
        self.what = what

    def check(self, child: Child) -> bool:
        try:
            return bool(self.fn())
        except OSError:
            return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except OSError:  # HTTPError and URLError included
        return False


GRPC_SERVING = 1  # grpc.health.v1.HealthCheckResponse.SERVING


def grpc_health_status(
    target: str, service: str = "", timeout: float = 1.0, *, tls: ClientTLS | None = None
) -> int | None:
    """The gRPC health status of ``service`` at ``target`` (``host:port``), None when
    nothing answers (a TLS handshake that fails included). ``tls``: check over TLS /
    mutual TLS. Imports gRPC on first use only."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from facemask.infra.client import open_channel

    with open_channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return None
        return int(reply.status)


# -- children ---------------------------------------------------------------------------------


@dataclass
class ChildSpec:
    """What to start and how to treat it.

    ``env``: the child's whole environment (None: this process's). Output: appended to
    ``log_path`` (raw) and, with ``echo``, written to the supervisor's stream with the
    child's name as prefix; with neither it is discarded. ``pipes``: the caller talks to
    the child over its stdin / stdout (text lines, :attr:`Child.stdin` /
    :attr:`Child.stdout`); only its stderr is treated as output. ``grace``: seconds between
    SIGTERM and SIGKILL when stopping. ``restart``: start it again when it dies (see
    :meth:`Supervisor.watch`). ``fatal_exits``: exit statuses after which a ``restart``
    child is not restarted when it had not become ready since its latest start (its
    ``ready`` probe never said so; a child without a probe counts as ready once it runs):
    the supervisor gives up on it (:attr:`Supervisor.failures`).
    """

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    cwd: str | Path | None = None
    ready: Probe | None = None
    ready_timeout: float = 60.0
    ready_interval: float = 0.2
    log_path: Path | None = None
    echo: bool = False
    restart: bool = False
    grace: float = 20.0
    pipes: bool = False
    fatal_exits: frozenset[int] = frozenset()


class Child:
    """A started :class:`ChildSpec` (made by :meth:`Supervisor.start`)."""

    def __init__(self, supervisor: Supervisor, spec: ChildSpec) -> None:
        self.supervisor = supervisor
        self.spec = spec
        self.proc: subprocess.Popen[Any] | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.killed = False  # the latest stop needed SIGKILL
        self.stopped = False  # stopped on purpose: not restarted
        self.restart_due: float | None = None
        self.ready_seen = False  # its probe said ready since its latest start
        self.failure: ChildExitedError | None = None  # given up on (a fatal exit)
        self._pumps: list[threading.Thread] = []
        self._listeners: list[Callable[[str], None]] = []
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.proc.pid if self.proc else None}>"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        """The process id (of the latest start)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal), else None."""
        return None if self.proc is None else self.proc.poll()

    @property
    def stdin(self) -> IO[str]:
        """The child's stdin (``pipes`` specs only)."""
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[str]:
        """The child's stdout (``pipes`` specs only)."""
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> int | None:
        """``returncode``."""
        return self.returncode

    def start(self) -> Child:
        """Start it (again: same spec, which the caller may have changed)."""
        self.supervisor.launch(self)
        return self

    def wait_ready(self, timeout: float | None = None) -> Child:
        """See :meth:`Supervisor.wait_ready`."""
        self.supervisor.wait_ready(self, timeout)
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and for its output to be copied; the exit status.
        Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        assert self.proc is not None, f"{self.name} was never started"
        code = self.proc.wait(timeout)
        self.join_output()
        return int(code)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process (not its group), if it still runs."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process group now and reap it (a crash: a ``restart`` child is
        started again by the watcher)."""
        if self.proc is None or self.proc.returncode is not None:
            return  # never started, or already reaped (its group may be someone else's now)
        self.supervisor.signal_group(self, signal.SIGKILL)
        self.proc.wait()
        self.join_output()

    def stop(self, grace: float | None = None) -> int | None:
        """See :meth:`Supervisor.stop`."""
        return self.supervisor.stop(self, grace)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its output: from the log file when there is one."""
        if self.spec.log_path is not None:
            try:
                with self.spec.log_path.open("rb") as log:
                    log.seek(0, os.SEEK_END)
                    size = log.tell()
                    log.seek(max(0, size - 4 * chars))
                    return log.read().decode("utf-8", "replace")[-chars:]
            except OSError:
                return ""
        return "\n".join(self._tail)[-chars:]

    def add_line_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(line)`` for each output line of the current run (probes)."""
        self._listeners.append(listener)

    def join_output(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until the output threads have copied everything."""
        for pump in self._pumps:
            pump.join(timeout)
        self._pumps = [p for p in self._pumps if p.is_alive()]

    # -- used by the supervisor's output threads --------------------------------------------

    def _line(self, raw: bytes | str, log: IO[bytes] | None) -> None:
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
        if log is not None:
            log.write(data if data.endswith(b"\n") else data + b"\n")
            log.flush()
        line = data.decode("utf-8", "replace").rstrip("\r\n")
        self._tail.append(line)
        for listener in list(self._listeners):
            listener(line)
        if self.spec.echo:
            self.supervisor.say(self.name, line)


class Supervisor:
    """Starts, watches, restarts and stops :class:`Child` processes (module docstring).

    ``out``: where echoed child output and the supervisor's own messages go (its messages
    go to the log when None), each line as ``name       | text``; ``name`` prefixes the
    supervisor's own messages.
    """

    def __init__(
        self,
        out: IO[str] | None = None,
        *,
        name: str = "supervisor",
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        poll_interval: float = 0.05,
    ) -> None:
        self.out = out
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.poll_interval = poll_interval
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.failures: list[ChildExitedError] = []
        """Children given up on (see ``ChildSpec.fatal_exits``), in order."""
        self.failed = threading.Event()
        """Set with the first of :attr:`failures`."""
        self._out_lock = threading.Lock()
        self._state = threading.RLock()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- output -----------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Write ``text`` as it is (not interleaved with child lines)."""
        if self.out is None:
            return
        with self._out_lock:
            self.out.write(text)
            self.out.flush()

    def say(self, prefix: str, line: str) -> None:
        """Write one prefixed line (to the log when there is no ``out``)."""
        if self.out is None:
            logger.info("%s | %s", prefix, line)
            return
        self.write(f"{prefix:<{PREFIX_WIDTH}} | {line}\n")

    # -- starting ---------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        """Start a new child (not waited for: see :meth:`Child.wait_ready`)."""
        child = Child(self, spec)
        with self._state:
            self.children.append(child)
        return child.start()

    def launch(self, child: Child) -> None:
        """Start the process of ``child`` (first start or a restart)."""
        spec = child.spec
        if child.alive():
            raise RuntimeError(f"{child.name} is already running")
        child.join_output(0.5)
        child.killed = child.stopped = child.ready_seen = False
        child.restart_due = None
        child.failure = None
        child._listeners = []
        child._tail.clear()
        if spec.ready is not None:
            spec.ready.prepare(child)
        pump = spec.echo or bool(spec.ready and spec.ready.needs_output)
        log: IO[bytes] | None = None
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = spec.log_path.open("ab")
        sink: int | IO[bytes] = log if log is not None else subprocess.DEVNULL
        stream: IO[Any] | None
        try:
            if spec.pipes:
                child.proc = subprocess.Popen(
                    list(spec.argv),
                    env=spec.env,
                    cwd=spec.cwd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE if pump else sink,
                    text=True,
                    start_new_session=True,
                )
                stream = child.proc.stderr if pump else None
            else:
                child.proc = subprocess.Popen(
                    list(spec.argv),
                    env=spec.env,
                    cwd=spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if pump else sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                stream = child.proc.stdout if pump else None
        except BaseException:
            if log is not None:
                log.close()
            raise
        child.started_at = self.clock()
        if stream is None:
            if log is not None:
                log.close()  # the child holds its own copy of the descriptor
            return
        thread = threading.Thread(
            target=self._pump, args=(child, stream, log), name=f"output-{child.name}", daemon=True
        )
        thread.start()
        child._pumps.append(thread)

    @staticmethod
    def _pump(child: Child, stream: IO[Any], log: IO[bytes] | None) -> None:
        try:
            while raw := stream.readline():
                child._line(raw, log)
        except (OSError, ValueError):  # closed under us
            pass
        finally:
            with contextlib.suppress(OSError):
                stream.close()
            if log is not None:
                log.close()

    def wait_ready(self, child: Child, timeout: float | None = None) -> None:
        """Until the child's probe says ready (at once when it has none, if it runs).

        Raises :class:`ChildExitedError` when the child ends first, :class:`WaitTimeoutError` after
        ``timeout`` (default: the spec's ``ready_timeout``)."""
        spec = child.spec
        probe = spec.ready

        def ready() -> bool:
            code = child.poll()
            if code is not None:
                child.join_output(2.0)
                raise ChildExitedError(child.name, code, child.log_tail())
            return self.check_ready(child)

        wait_until(
            ready,
            spec.ready_timeout if timeout is None else timeout,
            f"{child.name}: {probe.what if probe else 'start'}",
            spec.ready_interval,
            clock=self.clock,
            sleep=self.sleep,
        )

    def check_ready(self, child: Child) -> bool:
        """True when ``child`` runs and is ready: its probe said so since its latest start
        (remembered in :attr:`Child.ready_seen`), or says so now; a running child without
        a probe is ready."""
        if not child.alive():
            return False
        if not child.ready_seen:
            probe = child.spec.ready
            child.ready_seen = probe is None or probe.check(child)
        return child.ready_seen

    def wait_all_ready(
        self,
        children: Sequence[Child],
        timeout: float,
        *,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Until each of ``children`` is ready (:meth:`check_ready`); True then, False
        when ``cancel`` is set first. A ``restart`` child that dies meanwhile is waited
        for again once the watcher has restarted it. Raises the first of
        :attr:`failures` (a child given up on: see ``ChildSpec.fatal_exits``),
        :class:`ChildExitedError` when a child that is not restarted ends, and
        :class:`WaitTimeoutError` naming the children not ready after ``timeout``."""
        pending = list(children)

        def done() -> bool:
            if self.failures:
                raise self.failures[0]
            if cancel is not None and cancel.is_set():
                return True
            for child in pending:
                code = child.poll()
                if code is not None and not child.spec.restart:
                    child.join_output(2.0)
                    raise ChildExitedError(child.name, code, child.log_tail())
            pending[:] = [child for child in pending if not self.check_ready(child)]
            return not pending

        interval = min((child.spec.ready_interval for child in children), default=0.1)
        try:
            wait_until(done, timeout, "children", interval, clock=self.clock, sleep=self.sleep)
        except WaitTimeoutError:
            waiting = "; ".join(
                f"{child.name}: {child.spec.ready.what if child.spec.ready else 'start'}"
                for child in pending
            )
            raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {waiting}") from None
        return not pending

    # -- restarting -------------------------------------------------------------------------

    def poll_once(self) -> None:
        """One step of :meth:`watch`: note the readiness of the running ``restart``
        children that have ``fatal_exits``; give up on those that died with one of them
        before they became ready; note the other dead ``restart`` children, and start those
        whose backoff has passed."""
        with self._state:
            children = list(self.children)
        for child in children:  # probes may take a moment: not under the lock
            if child.spec.restart and child.spec.fatal_exits and not child.stopped:
                self.check_ready(child)
        with self._state:
            for child in children:
                if self.stopping.is_set():
                    return
                if not child.spec.restart or child.stopped or child.proc is None:
                    continue
                now = self.clock()
                if child.restart_due is None:
                    code = child.proc.poll()
                    if code is None:
                        continue
                    if code in child.spec.fatal_exits and not child.ready_seen:
                        self._give_up(child, code)
                        continue
                    if now - child.started_at > RESTART_RESET_AFTER_S:
                        child.restarts = 0
                    delay = RESTART_BACKOFF.delay(child.restarts + 1)
                    self.say(
                        self.name,
                        f"{child.name} exited with {describe_exit(code)}; restart in {delay:g}s",
                    )
                    child.restart_due = now + delay
                elif now >= child.restart_due:
                    child.restarts += 1
                    self.launch(child)

    def _give_up(self, child: Child, code: int) -> None:
        """``child`` ended with one of its ``fatal_exits`` before it was ready: no restart;
        recorded in :attr:`failures`."""
        child.join_output(2.0)
        child.stopped = True
        child.failure = ChildExitedError(child.name, code, child.log_tail())
        self.failures.append(child.failure)
        self.failed.set()
        self.say(
            self.name,
            f"{child.name} exited with {describe_exit(code)} before it was ready; "
            "not restarting it",
        )

    def watch(self, interval: float = 0.5) -> None:
        """Restart dead ``restart`` children until :meth:`stop_all` (blocks)."""
        while not self.stopping.wait(interval):
            self.poll_once()

    def watch_in_background(self, interval: float = 0.5) -> threading.Thread:
        """:meth:`watch` in a daemon thread (joined by :meth:`stop_all`)."""
        self._watcher = threading.Thread(
            target=self.watch, args=(interval,), name="supervisor-watch", daemon=True
        )
        self._watcher.start()
        return self._watcher

    # -- stopping ---------------------------------------------------------------------------

    def signal_group(self, child: Child, signum: int) -> None:
        """Send ``signum`` to the child's process group (it leads one)."""
        if child.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signum)

    def stop(self, child: Child, grace: float | None = None) -> int | None:
        """SIGTERM, up to ``grace`` seconds (default: the spec's) for it to exit, then
        SIGKILL; anything left in its process group is killed too. The exit status (None
        when never started). A stopped child is not restarted. When it was running, says
        ``NAME stopped in 0.4s (exit status 0)``."""
        proc = child.proc
        if proc is None:
            return None
        if child.stopped and proc.returncode is not None:
            return int(proc.returncode)  # stopped before
        child.stopped = True
        child.restart_due = None
        grace = child.spec.grace if grace is None else grace
        running = not _ended(proc)
        began = self.clock()
        if running:
            self.signal_group(child, signal.SIGTERM)
            try:
                wait_until(
                    lambda: _ended(proc),
                    grace,
                    f"{child.name} to stop",
                    self.poll_interval,
                    clock=self.clock,
                    sleep=self.sleep,
                )
            except WaitTimeoutError:
                self.say(self.name, f"{child.name} did not stop in {grace:g}s; killing it")
                child.killed = True
        if proc.returncode is None:  # not reaped yet: its process group is still its own
            self.signal_group(child, signal.SIGKILL)  # the child, or what it left behind
        code = proc.wait()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        child.join_output(2.0)
        if running:
            self.say(
                self.name,
                f"{child.name} stopped in {self.clock() - began:.1f}s ({describe_exit(code)})",
            )
        return int(code)

    def stop_all(self) -> None:
        """Stop every child, newest first (see :meth:`stop`); no restart after this."""
        with self._state:
            self.stopping.set()
            children = list(self.children)
        for child in reversed(children):
            self.stop(child)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5.0)


def python_argv(module: str, *args: str) -> list[str]:
    """``[sys.executable, "-m", module, *args]``."""
    return [sys.executable, "-m", module, *args]


def inherited_env(
    extra: Mapping[str, str] | None = None, *, drop_prefix: str | Sequence[str] = ()
) -> dict[str, str]:
    """This process's environment without the variables starting with ``drop_prefix`` (so
    a developer's settings do not leak into a child), plus ``extra``."""
    wanted = (drop_prefix,) if isinstance(drop_prefix, str) else tuple(drop_prefix)
    prefixes = tuple(p for p in wanted if p)
    env = {k: v for k, v in os.environ.items() if not (prefixes and k.startswith(prefixes))}
    env.update(extra or {})
    return env
