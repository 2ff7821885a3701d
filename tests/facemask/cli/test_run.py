"""``facemask run``: cameras named from their sources, ports announced, a child that cannot
start stops the run, a second run on the same state directory is refused before it starts
anything, the local Redis is bounded (memory, stream lengths, nothing on disk), and the
whole local pipeline comes up in dependency order (ingest after inference is SERVING),
detects, and stops on the terminal's Ctrl-C in reverse order (Redis last, in its own
process group) with no error logged and no process left behind."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
import yaml

from facemask.cli.run import (
    LOCAL_REDIS_MAXMEMORY,
    LOCAL_STREAM_LIMITS,
    SCRAPE_JOBS,
    CameraSource,
    choose_port,
    default_source,
    ingest_config,
    memory_size,
    start_local_redis,
)
from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import free_port
from facemask.dev.statelock import StateLock
from facemask.dev.supervisor import ChildSpec, LogLineProbe, Supervisor
from facemask.dev.waiting import wait_until
from tests.fixtures.paths import REPO_ROOT, SHARED_DIR, require
from tests.fixtures.pipeline import Pipeline, total

PROMETHEUS = shutil.which("prometheus")  # --prometheus: the Debian package
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
VIDEO = SHARED_DIR / "data" / "video" / "group4_masks.mp4"
REDIS_LINE = re.compile(r"redis-server .* at redis://:\*\*\*@127\.0\.0\.1:(\d+)/0")
ERROR_LINE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback")


# -- cameras named from their sources --------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "source", "name", "camera_id"),
    [
        ("/data/group4_masks.mp4", "/data/group4_masks.mp4", "group4_masks", "cam1-group4_masks"),
        ("0", "0", "device 0", "cam1-device-0"),
        ("/dev/video2", "/dev/video2", "video2", "cam1-video2"),
        (
            "rtsp://admin:hunter2@cam.local:8554/live/ch1?token=abc",
            "rtsp://admin:hunter2@cam.local:8554/live/ch1?token=abc",
            "cam.local:8554/live/ch1",
            "cam1-cam.local-8554-live-ch1",
        ),
        ("http://10.0.0.5/", "http://10.0.0.5/", "10.0.0.5", "cam1-10.0.0.5"),
        ("rtsp://h/s?a=1,b=2", "rtsp://h/s?a=1,b=2", "h/s", "cam1-h-s"),
        ("file:///clips/yard.mkv", "file:///clips/yard.mkv", "yard", "cam1-yard"),
        ("Front door=rtsp://u:pw@cam/1", "rtsp://u:pw@cam/1", "Front door", "cam1-Front-door"),
        ("Café=0", "0", "Café", "cam1-Caf"),
        (" lobby = /data/a.mp4 ", "/data/a.mp4", "lobby", "cam1-lobby"),
        ("???", "???", "???", "cam1-camera"),
    ],
)
def test_cameras_are_named_from_their_source_or_by_name(
    arg: str, source: str, name: str, camera_id: str
) -> None:
    camera = CameraSource.parse(arg)
    assert (camera.source, camera.name, camera.camera_id(0)) == (source, name, camera_id)
    assert "hunter2" not in camera.name and "pw" not in camera.name


def test_a_local_directory_or_a_file_with_an_equals_sign_is_a_source(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    odd = tmp_path / "a=b.mp4"
    odd.write_bytes(b"")
    assert CameraSource.parse(str(shots)) == CameraSource(str(shots), "shots")
    assert CameraSource.parse(str(odd)) == CameraSource(str(odd), "a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        CameraSource.parse("  ")


@pytest.mark.model
def test_the_default_slideshow_is_named_samples(tmp_path: Path) -> None:
    slideshow = default_source(tmp_path)
    assert any(slideshow.iterdir())  # the sample images were copied there
    assert CameraSource.parse(str(slideshow)).camera_id(0) == "cam1-samples"


def test_the_ingest_config_is_private_and_accepted_by_the_ingest_service(tmp_path: Path) -> None:
    video = require(VIDEO)
    camera = CameraSource.parse("Yard, east=rtsp://u:secret@cam.local/s?a=1,b=2")
    first = ingest_config(camera, 0, 2.5, tmp_path / "ingest" / "ingest-1.json")
    second = ingest_config(CameraSource.parse(str(video)), 1, 5, tmp_path / "ingest-2.json")
    assert first.stat().st_mode & 0o777 == 0o600  # a URL password stays private
    assert json.loads(first.read_text()) == {
        "cameras": [
            {
                "id": "cam1-Yard-east",
                "name": "Yard, east",
                "source": "rtsp://u:secret@cam.local/s?a=1,b=2",
                "fps": 2.5,
            }
        ]
    }
    assert json.loads(second.read_text())["cameras"][0]["loop"] is True  # a file loops
    for config in (first, second):
        checked = subprocess.run(
            [sys.executable, "-m", "services.ingest", "--config", str(config), "--check-config"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_")},
        )
        assert checked.returncode == 0, checked.stderr
        assert "secret" not in checked.stdout + checked.stderr


# -- ports --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["free", "busy", "any"])
def test_a_busy_port_is_replaced_and_said_so(case: str) -> None:
    out = io.StringIO()
    supervisor = Supervisor(out, name="run")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        wanted = {"free": free_port(), "busy": busy, "any": 0}[case]
        port = choose_port("127.0.0.1", wanted, "the dashboard", "--dashboard-port", supervisor)
    said = out.getvalue()
    if case == "free":
        assert (port, said) == (wanted, "")
    elif case == "any":
        assert port > 0 and said == ""
    else:
        assert port not in (busy, 0)
        assert said == (
            f"run        | port {busy} on 127.0.0.1 is not free (Address already in use): "
            f"the dashboard uses port {port} instead (--dashboard-port chooses)\n"
        )


# -- the local Redis ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("256mb", "256mb"), (" 1GB ", "1gb"), ("0", "0"), ("500000", "500000"), ("64k", "64k")],
)
def test_redis_maxmemory_takes_a_redis_size(text: str, value: str) -> None:
    assert memory_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.5gb", "-1", "256 mb", "1tb"])
def test_redis_maxmemory_rejects_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="a size such as 256mb"):
        memory_size(text)


def _bytes(size: str) -> int:
    number = re.match(r"\d+", size)
    assert number
    unit = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    return int(number.group()) * unit[size[number.end() :]]


@pytest.mark.parametrize(
    ("maxmemory", "config", "said"),
    [
        ("64mb", str(64 * 2**20), "maxmemory 64mb, noeviction, no persistence"),
        ("0", "0", "no maxmemory, no persistence"),
        ("0gb", "0", "no maxmemory, no persistence"),
    ],
)
def test_redis_maxmemory_reaches_the_local_redis(
    tmp_path: Path, maxmemory: str, config: str, said: str
) -> None:
    out = io.StringIO()
    supervisor = Supervisor(out, name="run")
    server = start_local_redis(tmp_path / "state", supervisor, memory_size(maxmemory))
    try:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("maxmemory") == {"maxmemory": config}
        client.close()
        assert f"; {said})\n" in out.getvalue() and "removed" not in out.getvalue()
    finally:
        supervisor.stop_all()


def test_the_local_redis_is_bounded_and_keeps_the_frame_streams_short(tmp_path: Path) -> None:
    """The Redis of ``facemask run`` (started by the same function) under a real ingest
    process with the run's stream limits, fed as fast as it can read the sample video: the
    server runs with maxmemory and noeviction and keeps nothing on disk (the append-only
    directory an earlier version left is removed, and that is said), and the frame stream
    stays within its ``MAXLEN ~`` (plus one stream node) after five times as many frames."""
    video = require(VIDEO)
    state = tmp_path / "state"
    old = state / "redis" / "appendonlydir"
    old.mkdir(parents=True)
    (old / "appendonly.aof.1.incr.aof").write_bytes(b"x" * 2_500_000)
    out = io.StringIO()
    supervisor = Supervisor(out, name="run")
    server = start_local_redis(state, supervisor, LOCAL_REDIS_MAXMEMORY)
    pipe = Pipeline(tmp_path / "pipeline", server.url, redis=server)
    try:
        said = out.getvalue()
        assert f"redis      | removed {old} (2.5 MB): the run's Redis keeps no files" in said
        assert not old.exists()
        assert "maxmemory 256mb, noeviction, no persistence" in said
        client = pipe.client
        config = client.config_get("*")
        assert int(config["maxmemory"]) == _bytes(LOCAL_REDIS_MAXMEMORY) == 256 * 2**20
        assert (config["maxmemory-policy"], config["appendonly"], config["save"]) == (
            "noeviction",
            "no",
            "",
        )
        maxlen = int(LOCAL_STREAM_LIMITS["FACEMASK_INGEST_STREAM_MAXLEN"])
        node = int(config["stream-node-max-entries"])
        camera = "cam1-group4_masks"
        ingest = pipe.start_ingest(
            "ingest-1",
            f"id={camera},source={video},fps=25,loop=true,realtime=false",
            **LOCAL_STREAM_LIMITS,
        )
        pipe.wait_ready(ingest)
        stream = StreamLayout().frames_for(camera)
        longest = 0

        def published() -> float | None:
            nonlocal longest
            longest = max(longest, client.xlen(stream))
            try:
                count = total(ingest.metrics(), "facemask_ingest_frames_published_total")
            except OSError:  # its metrics server is not up yet
                return None
            return count if count >= 5 * (maxlen + node) else None

        frames = wait_until(published, 120, f"{5 * (maxlen + node)} frames published", 0.05)
        length, memory = client.xlen(stream), client.info("memory")["used_memory"]
        assert maxlen <= length <= longest <= maxlen + node, (frames, length, longest)
        entry_bytes = sum(len(v) for v in client.xrevrange(stream, count=1)[0][1].values())
        # The stream's frames, twice over (allocator, the consumer-less stream's nodes),
        # plus what an empty server uses: far below maxmemory.
        assert memory < 2 * (maxlen + node) * entry_bytes + 8 * 2**20, memory
        print(  # the figures, for the README
            f"frames={frames:.0f} xlen={length} longest={longest} frame={entry_bytes}B "
            f"used_memory={memory / 2**20:.1f}MiB"
        )
    finally:
        pipe.stop_all()
        pipe.close()
        supervisor.stop_all()
    kept = sorted(p.name for p in (state / "redis").iterdir())
    assert kept == ["auth.conf", "password", "redis.log"], kept  # no AOF, no RDB


# -- whole runs ---------------------------------------------------------------------------------


def _run_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FACEMASK_") or k.startswith("FACEMASK_MODEL_")
    }
    if (SHARED_DIR / "models" / "face_mask_detection.pb").is_file():
        env.setdefault("FACEMASK_MODEL_MIRROR", str(SHARED_DIR / "models"))
    return {**env, **extra}


def _run_argv(state: Path, *args: str, any_port: bool = False) -> list[str]:
    """``facemask run`` on ``state``, on free ports (``any_port``: port 0, its choice)."""
    return [
        sys.executable,
        "-m",
        "facemask.cli",
        "run",
        "--state-dir",
        str(state),
        "--dashboard-port",
        "0" if any_port else str(free_port()),
        "--grpc-port",
        "0" if any_port else str(free_port()),
        *args,
    ]


@pytest.mark.model  # the launcher checks that the weights are there
def test_a_child_with_a_configuration_error_stops_the_run_with_its_error_line(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        _run_argv(tmp_path / "state", "--source", str(require(VIDEO))),
        env=_run_env(FACEMASK_INFERENCE_MAX_BATCH_SIZE="0"),  # inference exits 2
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    error = (
        "inference exited with exit status 2 (configuration error) before it was ready: "
        "configuration error: invalid configuration: FACEMASK_INFERENCE_MAX_BATCH_SIZE: "
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"facemask run: error: {error}" in result.stderr
    assert f"run        | error: {error}" in result.stdout
    assert "inference  | configuration error: invalid configuration" in result.stdout
    assert "restart in" not in result.stdout and "dashboard:" not in result.stdout
    assert "ingest-1" not in result.stdout  # ingest waits for inference, which never came
    stopped = re.findall(r"^run {8}\| (\S+) stopped in", result.stdout, re.MULTILINE)
    assert stopped == ["alerts", "redis"]


@pytest.mark.model  # the first run checks that the weights are there
@pytest.mark.timeout(120)
def test_a_second_run_on_the_same_state_directory_is_refused_before_it_starts_anything(
    tmp_path: Path,
) -> None:
    """Two real launches on one state directory: the second names the first's pid and
    the way out, exits 1 and starts nothing; once the first has stopped, the directory is
    free again (the lock went with it)."""
    video = require(VIDEO)
    state = tmp_path / "state"
    redis_up = LogLineProbe(r"^redis +\| redis-server .* at redis://")
    supervisor = Supervisor()
    first = supervisor.start(
        ChildSpec(
            "first-run",
            _run_argv(state, "--source", str(video)),
            env=_run_env(),
            cwd=REPO_ROOT,
            ready=redis_up,
            ready_timeout=60,
            ready_interval=0.2,
            log_path=tmp_path / "first.log",
            grace=30,
        )
    )
    try:
        first.wait_ready()  # it holds the lock and has started Redis
        second = subprocess.run(
            _run_argv(state, "--source", str(video)),
            env=_run_env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert re.fullmatch(
            f"facemask run: error: {re.escape(str(state))} is in use by another facemask run "
            rf"\(pid {first.pid}, started \d{{4}}-\d\d-\d\dT[\d:]{{8}}[+-][\d:]{{5}}\): stop "
            r"that one first, or give this run its own state directory \(--state-dir DIR\)\n",
            second.stderr,
        ), second.stderr
        assert second.stdout == ""  # nothing started: every start is said on stdout

        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(60) == 0, first.log_tail()
        with StateLock(state) as lock:  # released when the first run ended
            assert lock.held
    finally:
        supervisor.stop_all()


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_run_starts_in_dependency_order_and_ctrl_c_stops_it_in_reverse(tmp_path: Path) -> None:
    """The whole pipeline on the sample video (TFLite runtime, so that it is up in seconds),
    on ports of its own choice (``--dashboard-port 0 --grpc-port 0``): ingest starts after
    inference says SERVING, so no frame is skipped as too old; its Redis is bounded
    (maxmemory, noeviction, the run's stream lengths, nothing on disk); the
    terminal's Ctrl-C (SIGINT to the launcher's process group) stops ingest, alerts,
    inference, then Redis - which the SIGINT did not reach - with exit status 0, no ERROR
    line and nothing left behind."""
    video = require(VIDEO)
    printed = LogLineProbe(r"^dashboard: http://")
    supervisor = Supervisor()
    run = supervisor.start(
        ChildSpec(
            "facemask-run",
            _run_argv(
                tmp_path / "state",
                "--source",
                str(video),
                *(["--prometheus"] if PROMETHEUS else []),
                any_port=True,
            ),
            env=_run_env(
                FACEMASK_INFERENCE_RUNTIME="tflite",
                FACEMASK_INFERENCE_MAX_BATCH_SIZE="4",  # a short warm-up
            ),
            cwd=REPO_ROOT,
            ready=printed,
            ready_timeout=40,
            ready_interval=0.5,
            log_path=tmp_path / "run.log",
            grace=30,
        )
    )

    def log() -> str:
        return run.log_tail(1_000_000)

    try:
        run.wait_ready()  # the URLs; ChildExitedError (with the output) if it dies
        lines = log().splitlines()
        serving = next(i for i, line in enumerate(lines) if "inference service SERVING" in line)
        first_ingest = next(i for i, line in enumerate(lines) if line.startswith("ingest-1 "))
        assert serving < first_ingest, log()

        metrics = re.search(r"^metrics: +(http://\S+/metrics) \(inference\)", log(), re.M)
        dashboard = printed.line.split(": ", 1)[1].strip() if printed.line else ""
        redis_port = match.group(1) if (match := REDIS_LINE.search(log())) else None
        assert metrics and dashboard and redis_port, log()

        def analysed() -> str | None:
            text = urllib.request.urlopen(metrics.group(1), timeout=10).read().decode()
            return text if _metric(text, "facemask_frames_processed_total") >= 15 else None

        text = wait_until(analysed, 20, "15 frames analysed", 0.5)
        assert _metric(text, "facemask_frames_skipped_total", reason="too_old") == 0, text

        cameras = json.loads(urllib.request.urlopen(dashboard + "api/cameras", timeout=10).read())[
            "cameras"
        ]
        assert [(c["id"], c["name"]) for c in cameras] == [("cam1-group4_masks", "group4_masks")]

        if PROMETHEUS:  # the rule's own selector finds every service's target, and up
            prometheus = re.search(r"^run +\| prometheus: (http://\S+/)$", log(), re.M)
            assert prometheus, log()
            rule = next(
                r["expr"]
                for g in yaml.safe_load(RULES.read_text())["groups"]
                for r in g["rules"]
                if r.get("alert") == "FacemaskTargetDown"
            )
            query = rule.split("==")[0].strip()  # up{job=~"facemask-.*"}

            def scraped() -> dict[str, str] | None:
                url = f"{prometheus.group(1)}api/v1/query?" + urlencode({"query": query})
                reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
                up = {r["metric"]["job"]: r["value"][1] for r in reply["data"]["result"]}
                return up if len(up) == 3 else None

            up = wait_until(scraped, 30, f"Prometheus to scrape {query}", 0.5)
            assert up == dict.fromkeys(SCRAPE_JOBS.values(), "1"), up

        password_file = tmp_path / "state" / "redis" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 32 and password not in log(), "the password is never printed"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(redis_port)).ping()  # the Redis of `make run` needs it
        client = redis.Redis(port=int(redis_port), password=password)
        config = client.config_get("*")
        client.close()
        assert int(config["maxmemory"]) == 256 * 2**20, config["maxmemory"]
        assert (config["maxmemory-policy"], config["appendonly"], config["save"]) == (
            "noeviction",
            "no",
            "",
        )

        family = _descendants(run.pid)
        commands = {pid: _command(pid) for pid in family}
        redis_pid = next(pid for pid, cmd in commands.items() if "redis-server" in cmd)
        ingest_pid = next(pid for pid, cmd in commands.items() if "services.ingest" in cmd)
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{ingest_pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        assert environ[b"FACEMASK_INGEST_STREAM_MAXLEN"] == b"200"  # the run's stream limit
        # cameras of earlier runs drop off within the hour
        assert environ[b"FACEMASK_ALERTS_CAMERA_RETENTION"] == b"3600"
        assert len(family) >= 4, commands  # redis, inference, alerts and ingest
        assert os.getpgid(run.pid) == run.pid  # the launcher leads its group ...
        assert os.getpgid(redis_pid) not in (run.pid, os.getpgrp())  # ... redis has its own

        os.killpg(run.pid, signal.SIGINT)  # what the terminal's Ctrl-C does
        assert run.wait(30) == 0, log()
        stopped = re.findall(r"^run {8}\| (\S+) stopped in", log(), re.MULTILINE)
        first = ["prometheus"] if PROMETHEUS else []  # the last started, the first stopped
        assert stopped == [*first, "ingest-1", "alerts", "inference", "redis"], log()
        errors = [line for line in log().splitlines() if ERROR_LINE.search(line)]
        assert not errors, log()
        time.sleep(0.5)
        leftovers = [pid for pid in family if _alive(pid)]
        assert not leftovers, f"processes left behind: {leftovers}"
        kept = sorted(p.name for p in (tmp_path / "state" / "redis").iterdir())
        assert kept == ["auth.conf", "password", "redis.log"], kept  # no AOF, no RDB
    finally:
        supervisor.stop_all()
