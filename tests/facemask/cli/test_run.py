"""``facemask run``: cameras named from their sources, ports announced, a child that cannot
start stops the run, and the whole local pipeline comes up in dependency order (ingest
after inference is SERVING), detects, and stops on the terminal's Ctrl-C in reverse order
(Redis last, in its own process group) with no error logged and no process left behind."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from facemask.cli.run import CameraSource, choose_port, default_source, ingest_config
from facemask.dev.localredis import free_port
from facemask.dev.supervisor import ChildSpec, LogLineProbe, Supervisor
from facemask.dev.waiting import wait_until
from tests.fixtures.paths import REPO_ROOT, SHARED_DIR, require

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


def _run_argv(state: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "facemask.cli",
        "run",
        "--state-dir",
        str(state),
        "--dashboard-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
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
    """The whole pipeline on the sample video (TFLite runtime, so that it is up in seconds):
    ingest starts after inference says SERVING, so no frame is skipped as too old; the
    terminal's Ctrl-C (SIGINT to the launcher's process group) stops ingest, alerts,
    inference, then Redis - which the SIGINT did not reach - with exit status 0, no ERROR
    line and nothing left behind."""
    video = require(VIDEO)
    printed = LogLineProbe(r"^dashboard: http://")
    supervisor = Supervisor()
    run = supervisor.start(
        ChildSpec(
            "facemask-run",
            _run_argv(tmp_path / "state", "--source", str(video)),
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

        password_file = tmp_path / "state" / "redis" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 32 and password not in log(), "the password is never printed"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(redis_port)).ping()  # the Redis of `make run` needs it

        family = _descendants(run.pid)
        commands = {pid: _command(pid) for pid in family}
        redis_pid = next(pid for pid, cmd in commands.items() if "redis-server" in cmd)
        assert len(family) >= 4, commands  # redis, inference, alerts and ingest
        assert os.getpgid(run.pid) == run.pid  # the launcher leads its group ...
        assert os.getpgid(redis_pid) not in (run.pid, os.getpgrp())  # ... redis has its own

        os.killpg(run.pid, signal.SIGINT)  # what the terminal's Ctrl-C does
        assert run.wait(30) == 0, log()
        stopped = re.findall(r"^run {8}\| (\S+) stopped in", log(), re.MULTILINE)
        assert stopped == ["ingest-1", "alerts", "inference", "redis"], log()
        errors = [line for line in log().splitlines() if ERROR_LINE.search(line)]
        assert not errors, log()
        time.sleep(0.5)
        leftovers = [pid for pid in family if _alive(pid)]
        assert not leftovers, f"processes left behind: {leftovers}"
    finally:
        supervisor.stop_all()
