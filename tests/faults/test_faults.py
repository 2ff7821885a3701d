"""Faults of the running multi-process pipeline (ingest + inference + alerts on one Redis):
an inference replica SIGKILLed (restarted, or taken over by its peer), Redis restarted
with its append-only file, the alert service SIGKILLed and restarted, and an overload at
about three times the box's capacity. Every wait is bounded; everything is on loopback."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import pytest

from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.waiting import wait_until
from services.alerts.config import AlertSettings
from services.alerts.engine import AlertEngine
from tests.fixtures.pipeline import (
    VIDEO,
    Child,
    Pipeline,
    http_json,
    rss_mib,
    slideshow_dir,
    total,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def slideshow_nodes(pipe: Pipeline, tmp_path: Path, count: int, fps: float = 4) -> list[Child]:
    """``count`` ingest nodes, each a looping slideshow camera of the sample images."""
    images = [["demo2.jpg"], ["demo.png", "demo2.jpg"], ["face.png"]]
    nodes = []
    for index in range(count):
        folder = slideshow_dir(tmp_path / "slides", f"cam{index}", images[index % 3])
        nodes.append(
            pipe.start_ingest(f"ingest-{index}", f"id=cam{index},source={folder},fps={fps:g}")
        )
    return nodes


def answered_count(pipe: Pipeline) -> int:
    return sum(pipe.answered().values())


def wait_more_answers(pipe: Pipeline, more: int, timeout: float, children: list[Child]) -> None:
    """Until ``more`` further frames got their result (every child must stay alive).

    On a timeout the children get SIGABRT: Python's fault handler writes every thread's
    stack to their logs (kept under the test's tmp_path)."""
    start = answered_count(pipe)

    def grown() -> bool:
        for child in children:
            if not child.alive():
                pytest.fail(f"{child.name} died:\n{child.log_tail()}")
        return answered_count(pipe) >= start + more

    try:
        wait_until(grown, timeout, f"{more} more frames processed", 0.3)
    except BaseException:
        for child in children:
            if child.alive():
                child.proc.send_signal(signal.SIGABRT)  # type: ignore[union-attr]
        time.sleep(1.0)
        raise


def pending_of(pipe: Pipeline, consumer: str) -> int:
    """Frame entries delivered to ``consumer`` of the inference group and not acknowledged."""
    count = 0
    for key in pipe.layout.all_frames():
        for info in pipe.client.xinfo_consumers(key, "inference"):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name == consumer:
                count += int(info["pending"])
    return count


def stop_nodes_and_drain(pipe: Pipeline, nodes: list[Child], timeout: float = 60) -> None:
    for node in nodes:
        assert node.terminate() == 0, node.log_tail()
    pipe.wait_drained(timeout)


def test_inference_sigkill_mid_stream_then_restart_loses_no_frame(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    inference = pipe.start_inference()
    alerts = pipe.start_alerts()
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    nodes = slideshow_nodes(pipe, tmp_path, 2)
    wait_more_answers(pipe, 20, 40, [inference, alerts, *nodes])
    inference.kill()  # mid-stream: frames are in its batches, unacknowledged
    stranded = pending_of(pipe, "inference")
    time.sleep(1.5)  # the cameras keep publishing into the backlog
    inference.start()  # same consumer name: XAUTOCLAIM sweeps hand it back its own entries
    pipe.wait_ready(inference)
    wait_more_answers(pipe, 20, 40, [inference, alerts, *nodes])
    stop_nodes_and_drain(pipe, nodes)
    frames = pipe.assert_every_frame_answered_once()
    metrics = inference.metrics()  # the restarted process: counts only its own work
    assert total(metrics, "facemask_inference_requests_total", source="stream") >= stranded
    assert total(metrics, "facemask_inference_reclaimed_total") >= stranded
    entries = pipe.detections()
    assert len(entries) == len(frames)
    assert total(alerts.metrics(), "facemask_alerts_detections_consumed_total") == len(entries)


def test_two_replicas_one_killed_the_other_takes_over_its_pending_frames(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    a = pipe.start_inference("inference-a", FACEMASK_INFERENCE_MAX_INFLIGHT="32")
    b = pipe.start_inference("inference-b")
    alerts = pipe.start_alerts()
    for child in (a, b, alerts):
        pipe.wait_ready(child)
    nodes = slideshow_nodes(pipe, tmp_path, 3)
    wait_more_answers(pipe, 20, 40, [a, b, alerts, *nodes])
    # Freeze A while it holds unacknowledged frames, then kill it: they are stranded.
    stranded = 0
    for _ in range(200):
        if pending_of(pipe, "inference-a") > 0:
            a.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            stranded = pending_of(pipe, "inference-a")
            if stranded:
                break
            a.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        time.sleep(0.01)
    assert stranded > 0, "replica A never held a pending frame"
    a.kill()
    b_before = total(b.metrics(), "facemask_inference_reclaimed_total")
    wait_until(
        lambda: pending_of(pipe, "inference-a") == 0, 30, "B to take over A's pending frames"
    )
    wait_more_answers(pipe, 10, 40, [b, alerts, *nodes])
    stop_nodes_and_drain(pipe, nodes)
    pipe.assert_every_frame_answered_once()
    metrics = b.metrics()
    assert total(metrics, "facemask_inference_reclaimed_total") - b_before >= stranded
    assert total(metrics, "facemask_inference_duplicates_suppressed_total") == 0
    by_camera = Counter(pipe.frames().values())
    assert set(by_camera) == {"cam0", "cam1", "cam2"}


def test_redis_restart_with_aof_every_service_recovers(pipeline: Pipeline, tmp_path: Path) -> None:
    pipe = pipeline
    assert pipe.redis is not None and pipe.redis.appendonly
    inference = pipe.start_inference()
    alerts = pipe.start_alerts()
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    nodes = slideshow_nodes(pipe, tmp_path, 2)
    wait_more_answers(pipe, 20, 40, [inference, alerts, *nodes])
    before = {sid: e.frame_sid for sid, e in pipe.detections()}
    pipe.redis.stop()  # SIGTERM: the append-only file is flushed
    time.sleep(3.0)  # every service sees connection errors
    for child in (inference, alerts, *nodes):
        assert child.alive(), child.log_tail()
    pipe.redis.start()
    # Nobody is restarted: the services must reconnect on their own.
    wait_more_answers(pipe, 20, 60, [inference, alerts, *nodes])
    wait_until(
        lambda: total(alerts.metrics(), "facemask_alerts_ready") == 1, 30, "alerts ready again"
    )
    after = {sid: e.frame_sid for sid, e in pipe.detections()}
    assert set(before.items()) <= set(after.items()), "acknowledged results were lost"
    stop_nodes_and_drain(pipe, nodes)
    frames = pipe.assert_every_frame_answered_once()
    assert len(frames) > len(before)
    assert total(inference.metrics(), "facemask_inference_redis_errors_total") > 0
    al = alerts.metrics()
    assert total(al, "facemask_alerts_redis_errors_total") > 0
    # acknowledged before the restart stays acknowledged: nothing is consumed twice
    assert total(al, "facemask_alerts_detections_consumed_total") == len(pipe.detections())
    for node in nodes:
        assert "redis reachable again" in node.log_tail(200_000)


def expected_alert_ids(pipe: Pipeline, **overrides: Any) -> list[str]:
    """Replay every detections entry through a fresh engine with the service's settings."""
    settings = AlertSettings(state_dir="unused", **overrides)
    engine = AlertEngine.from_settings(settings)
    ids = []
    for key in pipe.layout.all_detections():
        for sid, entry in ((s.decode(), f) for s, f in pipe.client.xrange(key)):
            outcome = engine.process(key, sid, DetectionsEntry.from_fields(entry))
            ids.extend(a.alert_id for a in outcome.alerts)
    return ids


def test_alert_service_killed_and_restarted_loses_and_duplicates_no_alert(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    from tests.services.alerts.conftest import HookServer

    pipe = pipeline
    hooks = HookServer().up()
    try:
        env = {
            "FACEMASK_ALERTS_WEBHOOK_URL": f"{hooks.url}/hook",
            "FACEMASK_ALERTS_WEBHOOK_SECRET": "fault-secret",
            "FACEMASK_ALERTS_COOLDOWN": "3",
        }
        inference = pipe.start_inference()
        alerts = pipe.start_alerts(**env)
        pipe.wait_ready(inference)
        pipe.wait_ready(alerts)
        video = pipe.start_ingest("ingest-video", f"id=door,source={VIDEO},fps=5,loop=false")
        wait_until(lambda: total(alerts.metrics(), "facemask_alerts_total") >= 1, 40, "alert")
        alerts.kill()  # mid-video, with a batch possibly half done
        time.sleep(1.0)
        alerts.start()
        pipe.wait_ready(alerts)
        assert video.proc is not None
        video.proc.wait(60)  # the file ends: the node stops by itself
        pipe.wait_drained(60)
        api = f"http://127.0.0.1:{alerts.ports['http']}"
        stored = http_json(f"{api}/api/alerts?limit=500")["alerts"]
        ids = [a["id"] for a in stored]
        expected = expected_alert_ids(pipe, cooldown=3.0)
        assert len(expected) >= 2, "the video should raise several alerts with a 3 s cooldown"
        assert sorted(ids) == sorted(expected)
        assert all(a["has_snapshot"] for a in stored)
        wait_until(
            lambda: (
                len({r.headers.get("X-Facemask-Delivery") for r in hooks.received()})
                >= len(expected)
            ),
            20,
            "every alert delivered to the webhook",
        )
        delivered = [r.json()["alert"]["id"] for r in hooks.received("/hook")]
        # at-least-once delivery with a stable id: every alert, and no other
        assert set(delivered) == set(expected)
        assert sorted(set(delivered)) == sorted(set(ids))
        assert len(ids) == len(set(ids))
    finally:
        hooks.down()


# -- overload ---------------------------------------------------------------------------


def overload_frames() -> list[bytes]:
    capture = cv2.VideoCapture(str(VIDEO))
    out = []
    while len(out) < 8:
        ok, image = capture.read()
        if not ok:
            break
        for _ in range(10):
            capture.grab()
        image = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    capture.release()
    return out


# Per partition, as ingest's MAXLEN ~ (smaller: a short test). At 3x overload about 10 s
# of frames: the reader must never fall that far behind, or MAXLEN trims frames it has not
# read yet (200, about 4 s, was overrun when the machine was loaded; see README "Failure
# modes": such frames are not counted yet). Reached within the first half of the overload,
# so Redis' memory is flat in the second half.
STREAM_MAXLEN = 600


class Cameras(threading.Thread):
    """Simulated cameras: XADDs pre-encoded frames at ``rate`` frames/s in total."""

    def __init__(self, pipe: Pipeline, frames: list[bytes], cameras: int = 8) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = frames
        self.ids = [f"sim{i}" for i in range(cameras)]
        self.rate = 0.0
        self.published = 0
        self.stop = threading.Event()
        self._next = [0] * cameras

    def run(self) -> None:
        from facemask.infra.redisconn import connect

        client: Any = connect(self.pipe.redis_url)
        tick = time.monotonic()
        i = 0
        while not self.stop.is_set():
            if self.rate <= 0:
                time.sleep(0.01)
                tick = time.monotonic()
                continue
            tick += 1.0 / self.rate
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            camera = i % len(self.ids)
            entry = FrameEntry(
                self.ids[camera],
                self._next[camera],
                time.time(),
                "jpeg",
                640,
                480,
                self.data[i % len(self.data)],
            )
            self._next[camera] += 1
            fields: Any = entry.to_fields()
            key = self.pipe.layout.frames_for(entry.camera_id)
            client.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)
            self.published += 1
            i += 1
        client.close()


def test_overload_3x_capacity_bounded_memory_and_latency_then_back_to_real_time(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    # float32: its capacity (~60-90 frames/s here) can be tripled by the Python load
    # generator on two cores; bf16's (~180) would need ~540 frames/s offered from the same
    # cores. The overload behaviour under test does not depend on the precision.
    inference = pipe.start_inference(
        FACEMASK_INFERENCE_MAX_FRAME_AGE="1.0", FACEMASK_INFERENCE_PRECISION="float32"
    )
    alerts = pipe.start_alerts()
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    node = pipe.start_ingest("ingest-video", f"id=door,source={VIDEO},fps=5,loop=true")
    children = [inference, alerts, node]
    cams = Cameras(pipe, overload_frames())
    cams.start()
    try:
        # capacity: a closed loop keeps a small backlog for 5 s
        probe_start, ok_before = time.time(), 0
        cams.rate = 200.0
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end:
            backlog = cams.published - answered_count(pipe)
            cams.rate = 200.0 if backlog < 8 else 0.0
            time.sleep(0.05)
        cams.rate = 0.0
        pipe.wait_drained(30)
        ok_probe = sum(
            1 for _s, e in pipe.detections() if e.status == "ok" and e.capture_ts >= probe_start
        )
        capacity = max(5.0, (ok_probe - ok_before) / 5.0)

        rss: dict[str, list[float]] = {c.name: [] for c in children}
        rss["redis"] = []
        assert pipe.redis is not None and pipe.redis.proc is not None
        pids = {c.name: c.pid for c in children} | {"redis": pipe.redis.proc.pid}
        overload_start = time.time()
        cams.rate = min(3 * capacity, 300.0)
        for _ in range(30):  # 30 s of overload
            time.sleep(1.0)
            for name, pid in pids.items():
                rss[name].append(rss_mib(pid))
            for child in children:
                assert child.alive(), child.log_tail()
        drop = time.time()
        cams.rate = 0.5 * capacity
        time.sleep(10.0)
        cams.stop.set()
        cams.join(5)
        pipe.wait_drained(60)
    finally:
        cams.stop.set()

    entries = [e for _s, e in pipe.detections() if e.camera_id.startswith("sim")]
    frame_keys = Counter((e.camera_id, e.frame_id) for e in entries)
    if len(entries) != cams.published:  # say which frames and what the service counted
        seen = {(e.camera_id, e.frame_id) for e in entries}
        missing = [
            (cid, n)
            for i, cid in enumerate(cams.ids)
            for n in range(cams._next[i])
            if (cid, n) not in seen
        ]
        letters = [(d.get(b"reason"), d.get(b"camera")) for d in pipe.deadletters()]
        counted = {
            k: v
            for k, v in inference.metrics().items()
            if "lost" in k[0] or "deadletter" in k[0] or "skipped" in k[0]
        }
        raise AssertionError(
            f"{len(missing)} simulated frames got no detections entry: {missing[:10]}; "
            f"dead letters {letters[:10]}; inference counted {counted}"
        )
    assert max(frame_keys.values()) == 1
    loaded = [e for e in entries if overload_start <= e.capture_ts < drop]
    ok = [e for e in loaded if e.status == "ok"]
    skipped = [e for e in loaded if e.status == "skipped"]
    offered = len(loaded) / (drop - overload_start)
    assert offered >= 2.5 * capacity * 0.8, (offered, capacity)
    assert skipped, "3x overload skipped nothing"
    assert {e.reason for e in skipped} == {"too_old"}
    # skipped frames are counted, per reason, in the service's metrics
    metrics = inference.metrics()
    all_skipped = sum(1 for _s, e in pipe.detections() if e.status == "skipped")
    assert total(metrics, "facemask_frames_skipped_total", reason="too_old") == all_skipped
    # latency of what was processed stays bounded by the frame-age limit
    worst = max(e.done_ts - e.capture_ts for e in ok)
    assert worst < 1.0 + 1.5, worst
    # memory: no process keeps growing through the overload
    for name, samples in rss.items():
        first, second = max(samples[:15]), max(samples[15:])
        assert second - first < 64, (name, samples)
    # back to real time within seconds of the load dropping
    late = [e for e in entries if e.capture_ts >= drop + 4.0]
    assert late and all(e.status == "ok" for e in late), Counter(e.status for e in late)
    assert max(e.done_ts - e.capture_ts for e in late) < 0.75
