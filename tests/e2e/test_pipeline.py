"""The whole pipeline as real processes: Redis, inference, alerts, mosquitto, a webhook
receiver and four ingest nodes (the sample video and three image slideshows as cameras)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from facemask.dev.supervisor import http_ok
from facemask.dev.waiting import wait_until
from services.alerts.sinks.webhook import verify_signature
from tests.fixtures.mqtt import MosquittoProcess, MqttRecorder
from tests.fixtures.pipeline import (
    VIDEO,
    Child,
    Pipeline,
    http_json,
    slideshow_dir,
    total,
)
from tests.services.alerts.conftest import HookServer

CHROMIUM = "/usr/bin/chromium"
VIDEO_CAMERA = "entrance-video"
SLIDESHOWS = {
    "slides-demo": ["demo.png"],
    "slides-demo2": ["demo2.jpg"],
    "slides-face": ["face.png", "demo2.jpg"],
}
SECRET = "e2e-webhook-secret"
VIDEO_FRAMES_PER_LOOP = 83  # 16.5 s of video at 5 fps


def camera_frames(pipe: Pipeline, camera_id: str) -> int:
    """Frame entries of one camera in its partition's stream."""
    return sum(1 for cam in pipe.frames().values() if cam == camera_id)


def assert_ingest_metrics_match_streams(pipe: Pipeline, node: Child, camera_id: str) -> None:
    """The node's published counter equals the camera's entries in Redis.

    The node keeps publishing, so compare at a quiet moment: counter, stream, counter again,
    all three equal (bounded number of tries)."""
    seen: list[tuple[float, int, float]] = []
    for _ in range(60):
        before = total(
            node.metrics(), "facemask_ingest_frames_published_total", camera_id=camera_id
        )
        in_stream = camera_frames(pipe, camera_id)
        after = total(node.metrics(), "facemask_ingest_frames_published_total", camera_id=camera_id)
        if before == in_stream == after:
            return
        seen.append((before, in_stream, after))
        time.sleep(0.05)
    pytest.fail(f"{camera_id}: published counter never matched the stream: {seen[-5:]}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_cameras_end_to_end(
    pipeline: Pipeline,
    mosquitto: MosquittoProcess,
    mqtt_recorder: MqttRecorder,
    tmp_path: Path,
) -> None:
    pipe = pipeline
    hooks = HookServer().up()
    try:
        inference = pipe.start_inference()
        alerts = pipe.start_alerts(
            FACEMASK_ALERTS_WEBHOOK_URL=f"{hooks.url}/hook",
            FACEMASK_ALERTS_WEBHOOK_SECRET=SECRET,
            FACEMASK_ALERTS_MQTT_URL=mosquitto.url,
        )
        pipe.wait_ready(inference)
        pipe.wait_ready(alerts)
        api = f"http://127.0.0.1:{alerts.ports['http']}"

        nodes = {
            VIDEO_CAMERA: pipe.start_ingest(
                "ingest-video",
                f"id={VIDEO_CAMERA},source={VIDEO},fps=5,loop=true,name=Entrance,location=Hall",
            )
        }
        for camera_id, images in SLIDESHOWS.items():
            folder = slideshow_dir(tmp_path / "slides", camera_id, images)
            nodes[camera_id] = pipe.start_ingest(
                f"ingest-{camera_id}", f"id={camera_id},source={folder},fps=2"
            )

        # The video plays once (the unmasked man is in it); its alerts reach every sink.
        def video_played() -> bool:
            for child in (inference, alerts, *nodes.values()):
                if not child.alive():
                    pytest.fail(f"{child.name} died:\n{child.log_tail()}")
            done = [e for _s, e in pipe.detections() if e.camera_id == VIDEO_CAMERA]
            return len(done) >= VIDEO_FRAMES_PER_LOOP

        wait_until(video_played, 90, "one loop of the video through the pipeline", 0.5)

        def video_alerts() -> list[dict[str, Any]]:
            found = http_json(f"{api}/api/alerts?camera_id={VIDEO_CAMERA}")["alerts"]
            return [a for a in found if a["has_snapshot"]]

        raised = wait_until(video_alerts, 20, "an alert with a snapshot for the video")
        for alert in raised:
            with urllib.request.urlopen(f"{api}/api/alerts/{alert['id']}/snapshot.jpg") as r:
                assert r.headers["Content-Type"] == "image/jpeg"
                assert r.read()[:2] == b"\xff\xd8"

        # the dashboard lists the four cameras, all online
        cameras = http_json(f"{api}/api/cameras")["cameras"]
        assert sorted(c["id"] for c in cameras) == sorted(nodes)
        assert all(c["online"] for c in cameras), cameras
        assert http_ok(f"{api}/")
        if os.access(CHROMIUM, os.X_OK):
            sync_api = pytest.importorskip("playwright.sync_api")
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                try:
                    page = browser.new_page()
                    page.goto(f"{api}/")
                    page.wait_for_selector(".tile >> nth=3", timeout=15000)
                    tiles = page.locator(".tile")
                    assert tiles.count() == 4
                    shown = {tiles.nth(i).get_attribute("data-camera") for i in range(4)}
                    assert shown == set(nodes)
                finally:
                    browser.close()

        # ingest metrics agree with the frame streams (while the nodes still run)
        for camera_id, node in nodes.items():
            assert_ingest_metrics_match_streams(pipe, node, camera_id)

        # stop the cameras, let the pipeline drain, then everything must add up
        for node in nodes.values():
            assert node.terminate() == 0, node.log_tail()
        pipe.wait_drained(60)
        frames = pipe.assert_every_frame_answered_once()
        entries = pipe.detections()
        dead = pipe.deadletters()
        assert not dead, dead[:3]
        per_camera = Counter(frames.values())
        assert set(per_camera) == set(nodes)
        assert per_camera[VIDEO_CAMERA] >= VIDEO_FRAMES_PER_LOOP

        inf = inference.metrics()
        ok = [e for _s, e in entries if e.status == "ok"]
        skipped = [e for _s, e in entries if e.status == "skipped"]
        for camera_id in nodes:
            assert total(inf, "facemask_frames_processed_total", camera_id=camera_id) == sum(
                1 for e in ok if e.camera_id == camera_id
            )
            assert total(inf, "facemask_frames_skipped_total", camera_id=camera_id) == sum(
                1 for e in skipped if e.camera_id == camera_id
            )
        for label in ("mask", "no_mask"):
            faces = sum(e.detections.labels.count(label) for e in ok)
            assert total(inf, "facemask_faces_detected_total", label=label) == faces
        assert total(inf, "facemask_inference_requests_total", source="stream") == len(frames)
        assert total(inf, "facemask_inference_deadletter_total") == 0

        al = alerts.metrics()
        assert total(al, "facemask_alerts_detections_consumed_total") == len(entries)
        assert total(al, "facemask_alerts_deadletter_total") == 0
        for label in ("mask", "no_mask"):
            faces = sum(e.detections.labels.count(label) for e in ok)
            assert total(al, "facemask_faces_seen_total", label=label) == faces
        every_alert = http_json(f"{api}/api/alerts?limit=500")["alerts"]
        ids = {a["id"] for a in every_alert}
        assert len(ids) == len(every_alert)
        for camera_id in nodes:
            assert total(al, "facemask_alerts_total", camera_id=camera_id) == sum(
                1 for a in every_alert if a["camera_id"] == camera_id
            )
        assert {a["id"] for a in raised} <= ids

        # every alert reached the webhook and MQTT, exactly once, with its snapshot link
        def delivered() -> bool:
            return total(
                alerts.metrics(), "facemask_sink_deliveries_total", outcome="delivered"
            ) >= 2 * len(ids)

        wait_until(delivered, 20, "webhook and MQTT deliveries of every alert")
        requests = hooks.received("/hook")
        for request in requests:
            headers = {k.lower(): v for k, v in request.headers.items()}
            assert verify_signature(
                SECRET,
                headers["x-facemask-timestamp"],
                request.body,
                headers["x-facemask-signature"],
            )
        posted = [r.json() for r in requests]
        assert sorted(p["alert"]["id"] for p in posted) == sorted(ids)
        mqtt = [json.loads(m.payload) for m in mqtt_recorder.on("/alert")]
        assert sorted(m["id"] for m in mqtt) == sorted(ids)
        for doc in [*posted, *mqtt]:
            camera = doc["alert"]["camera_id"] if "alert" in doc else doc["camera_id"]
            if camera == VIDEO_CAMERA:
                assert doc["snapshot_url"].endswith("/snapshot.jpg")
        assert any(m["camera_id"] == VIDEO_CAMERA and m["snapshot_url"] for m in mqtt), (
            "no MQTT alert for the video"
        )
    finally:
        hooks.down()
