"""Acceptance of the ingest node against a real redis-server on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from facemask.contracts.registry import read_cameras
from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess, free_port
from facemask.dev.supervisor import ChildSpec, Supervisor
from facemask.dev.waiting import wait_until
from services.ingest.config import CameraConfig
from services.ingest.metrics import IngestMetrics
from services.ingest.worker import IngestWorker
from tests.fixtures.paths import REPO_ROOT
from tests.services.ingest.conftest import (
    fast_settings,
    frames_of,
    running,
    write_clip,
)

LAYOUT = StreamLayout()


def published(worker: IngestWorker, camera: str) -> float:
    return worker.metrics.value("facemask_ingest_frames_published_total", {"camera_id": camera})


@pytest.mark.slow
def test_video_published_at_rate_in_format_and_bounded(
    redis_server: RedisProcess, redis_client: redis.Redis, group4_video: Path
) -> None:
    # Small radix-tree nodes so that approximate trimming at MAXLEN 10 is visible quickly.
    redis_client.config_set("stream-node-max-entries", 5)
    settings = fast_settings(
        redis_server.url,
        [
            f"id=lobby,source={group4_video},fps=5,location=hall,name=Lobby",
            f"id=small,source={group4_video},fps=5,max_side=480,quality=60",
        ],
        stream_maxlen=10,
    )
    started = time.time()
    with running(settings) as worker:
        wait_until(lambda: published(worker, "lobby") >= 1, 10)
        first = published(worker, "lobby")
        t0 = time.monotonic()
        time.sleep(5.0)
        count = published(worker, "lobby") - first
        elapsed = time.monotonic() - t0
        metrics = worker.metrics
        assert 0.9 * 5 <= count / elapsed <= 1.1 * 5, count / elapsed
        assert metrics.value("facemask_ingest_capture_fps", {"camera_id": "lobby"}) == (
            pytest.approx(5, rel=0.1)
        )
        assert metrics.value("facemask_ingest_camera_up", {"camera_id": "lobby"}) == 1
        skipped = metrics.value(
            "facemask_ingest_frames_dropped_total", {"camera_id": "lobby", "reason": "rate_cap"}
        )
        captured = metrics.value("facemask_ingest_frames_captured_total", {"camera_id": "lobby"})
        assert skipped == pytest.approx(4 * captured, abs=8)  # 25 fps file, 1 frame in 5 kept
        assert metrics.value("facemask_ingest_encode_seconds_count", {"camera_id": "lobby"}) >= 25
        nbytes = metrics.value("facemask_ingest_published_bytes_total", {"camera_id": "lobby"})
        assert 10_000 < nbytes / published(worker, "lobby") < 200_000
        entries = {cam: frames_of(redis_client, LAYOUT, cam) for cam in ("lobby", "small")}
        registry = {c["id"]: c for c in read_cameras(redis_client, LAYOUT)}
        ttl = redis_client.ttl(LAYOUT.camera("lobby"))

    for camera, shape in (("lobby", (506, 960, 3)), ("small", (253, 480, 3))):
        got = entries[camera]
        assert got, camera
        ids = [e.frame_id for e in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert ids[0] >= int(started * 1000)  # seeded from the clock (unix ms)
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # nothing dropped
        for entry in got:
            assert entry.encoding == "jpeg" and entry.node == "test-node"
            image = cv2.imdecode(np.frombuffer(entry.data, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == shape and (entry.width, entry.height) == (shape[1], shape[0])
            assert started <= entry.capture_ts <= time.time()
        stamps = [e.capture_ts for e in got]
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert 4.5 <= rate <= 5.5, (camera, rate)
    # Both cameras share no partition here; each stream stays near MAXLEN 10.
    for camera in ("lobby", "small"):
        assert redis_client.xlen(LAYOUT.frames_for(camera)) <= 10 + 5
    assert len(entries["small"][0].data) < len(entries["lobby"][0].data)

    lobby = registry["lobby"]
    assert lobby["online"] == "1" and lobby["status"] == "up" and lobby["node"] == "test-node"
    assert (lobby["name"], lobby["location"], lobby["source_kind"]) == ("Lobby", "hall", "file")
    assert (lobby["fps"], lobby["resolution"]) == ("5", "960x506")
    assert lobby["stream"] == LAYOUT.frames_for("lobby") and lobby["version"]
    assert float(lobby["last_seen"]) >= started
    # Frames flow: the last publish time is on the heartbeat (same clock as last_seen).
    assert started <= float(lobby["last_frame_ts"]) <= float(lobby["last_seen"]) + 0.5
    assert int(lobby["frames_published"]) > 0
    assert 0 < ttl <= settings.camera_ttl
    assert registry["small"]["resolution"] == "480x253"
    assert redis_client.hget(LAYOUT.meta, "partitions") == b"4"
    # After the shutdown the registry says "stopped" and holds the last published id.
    assert redis_client.hget(LAYOUT.camera("lobby"), "status") == b"stopped"
    last = int(redis_client.hget(LAYOUT.camera("lobby"), "last_frame_id") or 0)
    assert last >= entries["lobby"][-1].frame_id


def test_frame_ids_increase_across_restarts(
    redis_server: RedisProcess, redis_client: redis.Redis, samples: Path
) -> None:
    settings = fast_settings(redis_server.url, [f"id=cam,source={samples},fps=20,max_side=64"])
    with running(settings) as worker:
        wait_until(lambda: published(worker, "cam") >= 3, 10)
    first_run = [e.frame_id for e in frames_of(redis_client, LAYOUT, "cam")]
    # A clock that went backwards: the registry's last_frame_id still wins.
    future = int(time.time() * 1000) + 3_600_000
    redis_client.hset(LAYOUT.camera("cam"), "last_frame_id", future)
    with running(settings) as worker:
        wait_until(lambda: published(worker, "cam") >= 3, 10)
    second_run = [e.frame_id for e in frames_of(redis_client, LAYOUT, "cam")][len(first_run) :]
    assert first_run == sorted(first_run)
    assert second_run[0] == future + 1 and second_run == sorted(second_run)


def test_failing_sources_retry_with_backoff_while_others_publish(
    redis_server: RedisProcess, redis_client: redis.Redis, samples: Path, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "door.mp4", 10)
    settings = fast_settings(
        redis_server.url,
        [
            f"id=good,source={samples},fps=5,max_side=160",
            f"id=door,source={clip},fps=10,loop=true",
            f"id=bad,source=http://127.0.0.1:{free_port()}/feed.mjpg,fps=5",
        ],
        source_backoff_initial=0.2,
        source_backoff_max=1.0,
    )
    with running(settings) as worker:
        wait_until(lambda: published(worker, "door") >= 3, 10)
        clip.unlink()  # the looping file disappears: reopening fails at its next pass
        wait_until(lambda: redis_client.hget(LAYOUT.camera("door"), "status") == b"reconnecting", 5)
        before = published(worker, "good")
        time.sleep(3.0)
        assert published(worker, "good") - before >= 12  # 5 fps carries on (15 expected)
        errors = worker.metrics.value("facemask_ingest_source_errors_total", {"camera_id": "bad"})
        # ~4.5 s of retries at 0.2, 0.4, 0.8, 1.0, 1.0 ... s: a handful, not a busy loop.
        assert 3 <= errors <= 9, errors
        bad = redis_client.hgetall(LAYOUT.camera("bad"))
        assert bad[b"status"] == b"reconnecting" and b"cannot open url" in bad[b"last_error"]
        assert int(bad[b"failures"]) >= 3
        door = redis_client.hgetall(LAYOUT.camera("door"))
        assert b"not found" in door[b"last_error"]
        for camera, up in (("good", 1), ("door", 0), ("bad", 0)):
            assert worker.metrics.value("facemask_ingest_camera_up", {"camera_id": camera}) == up
        # The file comes back: the camera recovers by itself.
        write_clip(clip, 10)
        wait_until(lambda: redis_client.hget(LAYOUT.camera("door"), "status") == b"up", 5)
        resumed = published(worker, "door")
        wait_until(lambda: published(worker, "door") > resumed, 5)


def test_all_cameras_ended_stops_the_node(
    redis_server: RedisProcess, redis_client: redis.Redis, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "once.mp4", 10)
    settings = fast_settings(redis_server.url, [f"id=once,source={clip},fps=25"])
    worker = IngestWorker(settings)
    worker.start()
    started = time.monotonic()
    worker.wait(timeout=10)
    assert time.monotonic() - started < 5
    assert worker.shutdown() == 0
    assert len(frames_of(redis_client, LAYOUT, "once")) == 10
    assert redis_client.hget(LAYOUT.camera("once"), "status") == b"ended"


def test_layout_mismatch_exits_2(redis_server: RedisProcess, redis_client: redis.Redis) -> None:
    redis_client.hset(LAYOUT.meta, "partitions", "16")
    settings = fast_settings(redis_server.url, [CameraConfig(id="cam", source="0")])
    assert IngestWorker(settings).run() == 2
    assert redis_client.exists(LAYOUT.camera("cam")) == 0


def test_metrics_port_in_use_exits_2(redis_server: RedisProcess, samples: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = fast_settings(
            redis_server.url,
            [f"id=cam,source={samples}"],
            metrics_port=port,
            metrics_host="127.0.0.1",
        )
        worker = IngestWorker(settings)
        assert worker.run() == 2
        assert "cannot serve metrics" in str(worker.fatal)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_redis_outage_survived_then_sigterm_exits_0(
    redis_server: RedisProcess, samples: Path, tmp_path: Path
) -> None:
    """A real process: Redis stops for 10 s, the node buffers (bounded), resumes, exits 0."""
    port = free_port()
    cam = 'camera_id="cam"'
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_")},
        "FACEMASK_INGEST_BUFFER_FRAMES": "20",
        "FACEMASK_INGEST_REDIS_BACKOFF_INITIAL": "0.2",
        "FACEMASK_INGEST_REDIS_BACKOFF_MAX": "1",
        "FACEMASK_INGEST_HEARTBEAT_INTERVAL": "1",
        "FACEMASK_LOG_FORMAT": "json",
    }
    node = Supervisor().start(
        ChildSpec(
            "ingest",
            [
                *(sys.executable, "-m", "services.ingest", "--redis-url", redis_server.url),
                *("--metrics-port", str(port)),
                *("--camera", f"id=cam,source={samples},fps=10,max_side=320"),
            ],
            env={**env, "FACEMASK_INGEST_METRICS_HOST": "127.0.0.1"},
            cwd=REPO_ROOT,
            log_path=tmp_path / "ingest.log",
        )
    )
    assert node.proc is not None
    proc = node.proc
    try:

        def metric(name: str) -> float:
            try:
                return scrape(port).get(name, 0.0)
            except OSError:
                return 0.0

        wait_until(lambda: metric(f"facemask_ingest_frames_published_total{{{cam}}}") >= 10, 20)
        rss_before = rss_kib(proc.pid)
        client = redis.Redis.from_url(redis_server.url)
        before_ids = [e.frame_id for e in frames_of(client, LAYOUT, "cam")]
        client.close()

        redis_server.stop()
        outage_end = time.monotonic() + 10
        fills, rss = [], []
        while time.monotonic() < outage_end:
            time.sleep(1.0)
            values = scrape(port)
            fills.append(values["facemask_ingest_buffer_frames"])
            rss.append(rss_kib(proc.pid))
            assert proc.poll() is None
        during = scrape(port)
        redis_server.start()

        assert during["facemask_ingest_redis_up"] == 0
        assert max(fills) <= 20 + 16  # capacity (+ one batch in flight at most)
        assert fills[-1] == 20
        dropped = during[f'facemask_ingest_frames_dropped_total{{{cam},reason="buffer_full"}}']
        assert dropped >= 50  # ~100 frames in 10 s at 10 fps, 20 kept
        assert max(rss) - rss_before < 30 * 1024  # bounded: no growth with the outage

        published_then = during[f"facemask_ingest_frames_published_total{{{cam}}}"]
        wait_until(
            lambda: (
                metric(f"facemask_ingest_frames_published_total{{{cam}}}") >= published_then + 30
            ),
            15,
        )
        after = scrape(port)
        assert after["facemask_ingest_redis_reconnects_total"] >= 1
        assert after["facemask_ingest_redis_up"] == 1
        captured = after[f"facemask_ingest_frames_captured_total{{{cam}}}"]
        accounted = (
            after[f"facemask_ingest_frames_published_total{{{cam}}}"]
            + after[f'facemask_ingest_frames_dropped_total{{{cam},reason="buffer_full"}}']
            + after["facemask_ingest_buffer_frames"]
        )
        assert abs(captured - accounted) <= 3  # every captured frame is accounted for

        client = redis.Redis.from_url(redis_server.url)
        ids = [e.frame_id for e in frames_of(client, LAYOUT, "cam")]
        assert ids[: len(before_ids)] == before_ids  # AOF kept the earlier entries
        assert ids == sorted(ids) and len(ids) > len(before_ids) + 20
        assert client.hget(LAYOUT.camera("cam"), "status") == b"up"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert client.hget(LAYOUT.camera("cam"), "status") == b"stopped"
        client.close()
    finally:
        node.kill()
    lines = [json.loads(line) for line in (tmp_path / "ingest.log").read_text().splitlines()]
    messages = [line["msg"] for line in lines]
    assert "redis reachable again; publishing resumes" in messages
    assert messages.count("redis unreachable; buffering frames (oldest dropped when full)") == 1
    assert messages[-1] == "ingest node stopped"
    assert all(line.get("service") == "ingest" for line in lines)


def test_ingest_never_imports_tensorflow_or_grpc() -> None:
    code = (
        "import sys, services.ingest, services.ingest.worker, services.ingest.__main__\n"
        "import services.ingest.voice, services.ingest.registry\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grpc'))\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


class LoopKilled(BaseException):
    """Escapes every ``except Exception``: the loop's thread dies of it."""


def kill_once(obj: object, method: str) -> list[int]:
    """Make ``obj.method`` raise :class:`LoopKilled` on its next call, then work again."""
    real = getattr(obj, method)
    calls: list[int] = []

    def dying(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise LoopKilled(f"{method} killed by the test")
        return real(*args, **kwargs)

    setattr(obj, method, dying)
    return calls


def test_a_dead_camera_loop_is_restarted_not_taken_for_an_ended_file(
    redis_server: RedisProcess, samples: Path
) -> None:
    """The only camera's thread dies: the node used to take it for an ended file and stop
    with exit 0; now the supervisor restarts it and frames keep coming."""
    settings = fast_settings(
        redis_server.url, [f"id=cam,source={samples},fps=20,max_side=64"], watchdog_interval=0.05
    )
    worker = IngestWorker(settings, metrics=IngestMetrics())
    worker.start()
    try:
        wait_until(lambda: published(worker, "cam") >= 2, 10)
        (camera,) = worker.cameras
        kill_once(camera, "_process")
        wait_until(lambda: worker.supervisor.problems() == {"camera-cam": "dead, restarting"}, 5)
        assert not camera.finished and camera.failed
        worker.wait(timeout=1.0)
        assert not worker.stopping, "a dead camera is no ended file"
        restarts = {"loop": "camera-cam"}
        wait_until(
            lambda: worker.metrics.value("facemask_ingest_loop_restarts_total", restarts) == 1, 5
        )
        before = published(worker, "cam")
        wait_until(lambda: published(worker, "cam") >= before + 3, 10, "frames after the restart")
        assert worker.supervisor.ready and worker.supervisor.verdict is None
    finally:
        assert worker.shutdown() == 0


def test_a_publisher_that_dies_too_often_stops_the_node_with_exit_70(
    redis_server: RedisProcess, samples: Path
) -> None:
    settings = fast_settings(
        redis_server.url,
        [f"id=cam,source={samples},fps=20,max_side=64"],
        watchdog_interval=0.05,
        restart_limit=0,
    )
    worker = IngestWorker(settings, metrics=IngestMetrics())
    worker.start()
    wait_until(lambda: published(worker, "cam") >= 2, 10)
    kill_once(worker.publisher, "_send")
    started = time.monotonic()
    worker.wait(timeout=10)
    assert time.monotonic() - started < 5, "the verdict ends the wait"
    assert worker.supervisor.verdict is not None and "publisher" in worker.supervisor.verdict
    assert worker.shutdown() == 70
