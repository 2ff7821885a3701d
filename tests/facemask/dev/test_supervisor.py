"""facemask.dev.supervisor: small Python children that print, serve, ignore SIGTERM or die.

Where timing matters (grace periods, restart backoff) the supervisor runs on a fake clock,
so nothing here asserts a wall-clock duration.
"""

from __future__ import annotations

import io
import re
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from facemask.dev.localredis import free_port
from facemask.dev.supervisor import (
    CallableProbe,
    Child,
    ChildExitedError,
    ChildSpec,
    GrpcHealthProbe,
    HttpProbe,
    LogLineProbe,
    Supervisor,
    TcpProbe,
    describe_exit,
    inherited_env,
)
from facemask.dev.waiting import WaitTimeoutError, wait_until

CHILD = """
import http.server, os, signal, sys, time
mode = sys.argv[1]
print(f"hello from {mode}", flush=True)
if mode == "exit":
    print("boom", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "config":
    print("loading settings", flush=True)
    print("configuration error: FOO must be >= 1", file=sys.stderr, flush=True)
    sys.exit(2)
if mode == "unhealthy":  # ready, exits 70 on SIGUSR1; started again: 70 before ready
    if os.path.exists(os.environ["MARKER"]):
        print("unhealthy again", flush=True)
        sys.exit(70)
    open(os.environ["MARKER"], "w").close()
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(70))
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    while True:
        time.sleep(1)
record = os.environ.get("RECORD")

def on_term(signum, frame):
    if record:
        with open(record, "a") as out:
            out.write(mode + "\\n")
    print("stopping", flush=True)
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
if mode == "parent":  # leaves a grandchild behind when it exits
    import subprocess
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('grandchild ignores SIGTERM', flush=True); time.sleep(600)"
    )
    grandchild = subprocess.Popen([sys.executable, "-c", code])
    print(f"grandchild {grandchild.pid}", flush=True)
if mode == "serve":
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class FakeClock:
    """A clock that only moves when somebody sleeps on it (each sleep also yields a
    moment of real time, so that the children get to run)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(0.005)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def spec(
    script: Path, name: str, mode: str, env: dict[str, str] | None = None, **kwargs: Any
) -> ChildSpec:
    return ChildSpec(
        name,
        [sys.executable, str(script), mode],
        env=inherited_env({"PYTHONUNBUFFERED": "1", **(env or {})}),
        **kwargs,
    )


def test_a_serving_child_is_ready_by_http_tcp_and_its_output_is_prefixed_and_logged(
    script: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    port = free_port()
    log = tmp_path / "logs" / "web.log"
    with Supervisor(out, name="test") as sup:
        child = sup.start(
            spec(
                script,
                "web",
                "serve",
                env={"PORT": str(port)},
                ready=HttpProbe(f"http://127.0.0.1:{port}/healthz"),
                ready_timeout=60,
                echo=True,
                log_path=log,
            )
        )
        child.wait_ready()
        assert TcpProbe(port).check(child)
        assert child.alive() and child.returncode is None
        assert child.stop() == 0
        assert not child.killed
    text = out.getvalue()
    assert "web        | hello from serve\n" in text
    assert f"web        | listening on {port}\n" in text
    assert "web        | stopping\n" in text
    raw = log.read_text()
    assert raw.startswith("hello from serve\n") and "stopping\n" in raw
    assert "|" not in raw  # the file holds the child's own lines
    assert "stopping" in child.log_tail()


def test_a_log_line_probe_sees_the_line_and_keeps_it(script: Path) -> None:
    probe = LogLineProbe(r"listening on (\d+)")
    port = free_port()
    with Supervisor() as sup:
        child = sup.start(spec(script, "web", "serve", env={"PORT": str(port)}, ready=probe))
        child.wait_ready(timeout=60)
        assert probe.line == f"listening on {port}"
        assert "hello from serve" in child.log_tail()  # kept in memory: no log file


def test_a_callable_probe_and_output_discarded_without_log_or_echo(script: Path) -> None:
    port = free_port()
    calls: list[int] = []

    def answers() -> bool:
        calls.append(1)
        return TcpProbe(port).check(child)

    with Supervisor() as sup:
        child = sup.start(
            spec(script, "web", "serve", env={"PORT": str(port)}, ready=CallableProbe(answers))
        )
        child.wait_ready(timeout=60)
        assert calls
        assert child.log_tail() == ""  # nothing captured


def test_a_grpc_health_probe_says_serving() -> None:
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        probe = GrpcHealthProbe(port)
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert not probe.check(None)  # type: ignore[arg-type]
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert probe.check(None)  # type: ignore[arg-type]
    finally:
        server.stop(None)
    assert not GrpcHealthProbe(free_port(), timeout=0.2).check(None)  # type: ignore[arg-type]


def test_a_child_that_exits_early_is_reported_with_its_exit_status(script: Path) -> None:
    with Supervisor() as sup:
        child = sup.start(spec(script, "doomed", "exit", ready=LogLineProbe("never printed")))
        with pytest.raises(ChildExitedError) as caught:
            child.wait_ready(timeout=60)
    error = caught.value
    assert error.name == "doomed" and error.returncode == 3
    assert "doomed exited early with exit status 3" in str(error)
    assert "boom" in error.tail  # stderr is part of the output
    assert describe_exit(-9) == "signal SIGKILL" and describe_exit(None) == "still running"


def test_stop_all_stops_in_reverse_start_order(script: Path, tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    out = io.StringIO()
    sup = Supervisor(out)
    children = [
        sup.start(
            spec(script, name, name, env={"RECORD": str(record)}, ready=LogLineProbe("^ready$"))
        )
        for name in ("first", "second", "third")
    ]
    for child in children:
        child.wait_ready(timeout=60)
    sup.stop_all()
    assert record.read_text().split() == ["third", "second", "first"]
    assert [c.returncode for c in children] == [0, 0, 0]
    assert not any(c.alive() for c in children)
    assert sup.stopping.is_set()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stopping_a_child_also_kills_what_it_left_in_its_process_group(script: Path) -> None:
    with Supervisor() as sup:
        child = sup.start(
            spec(script, "parent", "parent", ready=LogLineProbe("grandchild ignores SIGTERM"))
        )
        child.wait_ready(timeout=60)
        found = re.search(r"^grandchild (\d+)$", child.log_tail(), re.MULTILINE)
        assert found is not None
        grandchild = int(found.group(1))
        assert not _gone(grandchild)
        assert child.stop() == 0  # the child itself exits cleanly on SIGTERM ...
        assert not child.killed
    # ... and what it left behind in its process group, deaf to SIGTERM, gets SIGKILL
    wait_until(lambda: _gone(grandchild), 30, "the grandchild to be killed")


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(script: Path) -> None:
    clock = FakeClock()
    out = io.StringIO()
    sup = Supervisor(out, name="sup", clock=clock, sleep=clock.sleep, poll_interval=1.0)
    child = sup.start(
        spec(script, "stubborn", "stubborn", ready=LogLineProbe("ignoring"), grace=20)
    )
    child.wait_ready(timeout=10_000)  # fake seconds
    before = clock()
    assert child.stop() == -signal.SIGKILL
    assert child.killed
    assert clock() - before >= 20  # it was given the whole (fake) grace period
    assert "sup        | stubborn did not stop in 20s; killing it\n" in out.getvalue()
    assert "ignoring SIGTERM" in child.log_tail()


def test_a_restart_child_is_restarted_with_backoff_and_a_stopped_one_is_not(
    script: Path,
) -> None:
    clock = FakeClock()
    out = io.StringIO()
    sup = Supervisor(out, name="sup", clock=clock, sleep=clock.sleep)
    child = sup.start(spec(script, "worker", "worker", ready=LogLineProbe("^ready$"), restart=True))
    try:
        child.wait_ready(timeout=10_000)
        first_pid = child.pid
        child.kill()  # a crash
        sup.poll_once()
        assert "sup        | worker exited with signal SIGKILL; restart in 1s\n" in out.getvalue()
        sup.poll_once()
        assert not child.alive()  # the backoff has not passed yet
        clock.advance(1.0)
        sup.poll_once()
        assert child.alive() and child.pid != first_pid and child.restarts == 1
        child.wait_ready(timeout=10_000)

        child.kill()  # again, soon after: the delay doubles
        sup.poll_once()
        assert "worker exited with signal SIGKILL; restart in 2s" in out.getvalue()
        clock.advance(2.0)
        sup.poll_once()
        assert child.alive() and child.restarts == 2
        child.wait_ready(timeout=10_000)

        clock.advance(61.0)  # it ran for over a minute: the count starts again
        child.kill()
        sup.poll_once()
        assert out.getvalue().endswith("worker exited with signal SIGKILL; restart in 1s\n")
        clock.advance(1.0)
        sup.poll_once()
        child.wait_ready(timeout=10_000)

        assert child.stop() == 0  # on purpose: not restarted
        clock.advance(100.0)
        sup.poll_once()
        assert not child.alive()
    finally:
        sup.stop_all()


def test_no_restart_after_stop_all(script: Path) -> None:
    clock = FakeClock()
    sup = Supervisor(clock=clock, sleep=clock.sleep)
    child = sup.start(spec(script, "worker", "worker", ready=LogLineProbe("^ready$"), restart=True))
    child.wait_ready(timeout=10_000)
    child.kill()
    sup.stop_all()
    clock.advance(100.0)
    sup.poll_once()
    assert not child.alive()


def test_a_child_can_be_started_again_with_a_changed_spec(script: Path) -> None:
    with Supervisor() as sup:
        child = sup.start(spec(script, "web", "serve", env={"PORT": str(free_port())}))
        child.kill()
        port = free_port()
        assert child.spec.env is not None
        child.spec.env["PORT"] = str(port)
        child.spec.ready = HttpProbe(f"http://127.0.0.1:{port}/")
        child.start().wait_ready(timeout=60)
        assert child.stop() == 0


def test_a_pipes_child_talks_over_stdin_and_stdout(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "print('to the log', file=sys.stderr, flush=True)\n"
        "for line in sys.stdin:\n"
        "    print(line.strip().upper(), flush=True)\n"
    )
    out = io.StringIO()
    with Supervisor(out) as sup:
        child = sup.start(
            ChildSpec("echo", [sys.executable, "-c", code], pipes=True, echo=True, grace=5)
        )
        child.stdin.write("hello\n")
        child.stdin.flush()
        assert child.stdout.readline() == "HELLO\n"
        child.stdin.close()
        assert child.wait(60) == 0
    assert "echo       | to the log\n" in out.getvalue()


def test_wait_ready_times_out_on_the_supervisor_clock(script: Path) -> None:
    clock = FakeClock()
    with Supervisor(clock=clock, sleep=clock.sleep) as sup:
        child = sup.start(spec(script, "quiet", "worker", ready=LogLineProbe("never")))
        with pytest.raises(WaitTimeoutError, match="quiet: a line matching 'never'"):
            child.wait_ready(timeout=5)
        assert child.alive()


def _exited(child: Child) -> None:
    wait_until(lambda: child.poll() is not None, 60, f"{child.name} to exit")


@pytest.mark.parametrize(
    ("mode", "code", "given_up"),
    [("config", 2, True), ("exit", 3, False)],
)
def test_a_fatal_exit_before_ready_is_given_up_on_and_another_exit_restarted(
    script: Path, mode: str, code: int, given_up: bool
) -> None:
    clock = FakeClock()
    out = io.StringIO()
    sup = Supervisor(out, name="sup", clock=clock, sleep=clock.sleep)
    child = sup.start(
        spec(
            script,
            "svc",
            mode,
            ready=LogLineProbe("^ready$"),
            restart=True,
            fatal_exits=frozenset({2, 70}),
        )
    )
    try:
        _exited(child)
        sup.poll_once()
        assert sup.failed.is_set() is given_up
        clock.advance(1.0)
        sup.poll_once()
        if not given_up:
            assert f"svc exited with exit status {code}; restart in 1s" in out.getvalue()
            assert child.restarts == 1 and not sup.failures
            return
        assert child.restarts == 0 and not child.alive()
        assert sup.failures == [child.failure]
        failure = child.failure
        assert failure is not None and failure.returncode == 2
        assert failure.error_line == "configuration error: FOO must be >= 1"
        assert (
            "sup        | svc exited with exit status 2 before it was ready; not restarting it\n"
            in out.getvalue()
        )
        with pytest.raises(ChildExitedError) as caught:
            sup.wait_all_ready([child], 10)  # a waiter learns it at once
        assert caught.value is failure
    finally:
        sup.stop_all()


def test_unhealthy_after_ready_is_restarted_but_unhealthy_before_ready_is_given_up_on(
    script: Path, tmp_path: Path
) -> None:
    clock = FakeClock()
    out = io.StringIO()
    sup = Supervisor(out, name="sup", clock=clock, sleep=clock.sleep)
    child = sup.start(
        spec(
            script,
            "svc",
            "unhealthy",
            env={"MARKER": str(tmp_path / "started")},
            ready=LogLineProbe("^ready$"),
            restart=True,
            fatal_exits=frozenset({70}),
        )
    )
    try:
        wait_until(lambda: sup.poll_once() or child.ready_seen, 60, "the watcher to see it ready")
        child.send_signal(signal.SIGUSR1)  # its watchdog's fatal verdict: exit 70
        _exited(child)
        sup.poll_once()
        assert "svc exited with exit status 70; restart in 1s" in out.getvalue()
        clock.advance(1.0)
        sup.poll_once()
        assert child.restarts == 1 and not sup.failed.is_set()
        _exited(child)  # 70 again, before it was ready this time
        sup.poll_once()
        assert sup.failed.is_set() and child.failure is not None
        assert child.failure.returncode == 70 and child.failure.error_line == "unhealthy again"
    finally:
        sup.stop_all()


def test_wait_all_ready_waits_through_a_restart_names_the_late_and_can_be_cancelled(
    script: Path,
) -> None:
    clock = FakeClock()
    sup = Supervisor(clock=clock, sleep=clock.sleep)
    worker = sup.start(
        spec(script, "worker", "worker", ready=LogLineProbe("^ready$"), restart=True)
    )
    quiet = sup.start(spec(script, "quiet", "worker", ready=LogLineProbe("never")))
    try:
        assert sup.wait_all_ready([worker], 10_000)
        worker.kill()  # a crash: the watcher restarts it after its backoff (fake seconds)
        sup.watch_in_background(interval=0.05)
        assert sup.wait_all_ready([worker], 10_000)
        assert worker.restarts == 1 and worker.alive()
        with pytest.raises(WaitTimeoutError, match="waiting for quiet: a line matching 'never'"):
            sup.wait_all_ready([worker, quiet], 5)
        cancel = threading.Event()
        cancel.set()
        assert sup.wait_all_ready([quiet], 10_000, cancel=cancel) is False
    finally:
        sup.stop_all()


def test_stop_says_how_each_child_stopped(script: Path) -> None:
    out = io.StringIO()
    with Supervisor(out, name="sup") as sup:
        child = sup.start(spec(script, "worker", "worker", ready=LogLineProbe("^ready$")))
        child.wait_ready(timeout=60)
    assert re.search(
        r"^sup {8}\| worker stopped in \d+\.\ds \(exit status 0\)$", out.getvalue(), re.M
    )


@pytest.mark.parametrize(
    ("tail", "line"),
    [
        ("", ""),
        ("starting\nconfiguration error: bad\n", "configuration error: bad"),
        ("ERROR x: failed\nshutting down\n", "ERROR x: failed"),
        ("one\n  two  \n\n", "two"),
    ],
)
def test_the_error_line_of_an_exited_child(tail: str, line: str) -> None:
    assert ChildExitedError("svc", 2, tail).error_line == line
