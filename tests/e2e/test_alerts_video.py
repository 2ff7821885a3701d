"""The sample video through the real services (ingest -> inference -> alerts, real Redis)
with the default settings and an ignore mask over the poster: one alert per unmasked
person at the start (4) and one when the left man takes his mask off, none for the poster.

Deterministic on a busy machine: ingest starts only once inference is SERVING (the model
warm), and inference may not skip a frame as too old (``max_frame_age`` raised), so every
one of the clip's 83 frames is analysed; the file plays once in real time (16.6 s).
"""

from __future__ import annotations

import json
import time

import pytest

from facemask.dev.waiting import wait_until
from tests.fixtures.pipeline import VIDEO, Pipeline, http_json, total
from tests.services.alerts.conftest import POSTER_MASK, describe_alerts, expected_alerts, who

CAMERA = "group4"
FRAMES = 83  # 16.6 s of 25 fps video at ingest's default 5 fps


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_sample_video_alerts_once_per_person_end_to_end(pipeline: Pipeline) -> None:
    pipe = pipeline
    zones = {CAMERA: {"ignore": [{"name": "poster", "points": POSTER_MASK}]}}
    inference = pipe.start_inference(FACEMASK_INFERENCE_MAX_FRAME_AGE="600")
    alerts = pipe.start_alerts(FACEMASK_ALERTS_ZONES=json.dumps(zones))
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    api = f"http://127.0.0.1:{alerts.ports['http']}"
    assert http_json(f"{api}/api/cameras/{CAMERA}/zones")["source"] == "config"

    started = time.time()
    pipe.start_ingest("ingest-video", f"id={CAMERA},source={VIDEO},loop=false")

    def analysed() -> bool:
        for child in (inference, alerts):
            if not child.alive():
                pytest.fail(f"{child.name} died:\n{child.log_tail()}")
        return sum(1 for _s, e in pipe.detections() if e.camera_id == CAMERA) >= FRAMES

    wait_until(analysed, 60, "every frame of the video analysed", 0.5)
    # The node published every frame its rate cap kept (none dropped), then ended.
    assert sum(1 for camera in pipe.frames().values() if camera == CAMERA) == FRAMES
    pipe.wait_drained(30)
    entries = [e for _s, e in pipe.detections() if e.camera_id == CAMERA]
    assert len(entries) == FRAMES and all(e.status == "ok" for e in entries)
    start = min(e.capture_ts for e in entries)  # the first frame is video time 0
    assert start >= started

    found = http_json(f"{api}/api/alerts?camera_id={CAMERA}&limit=50")["alerts"]
    names = describe_alerts([(a["ts"] - start, a["box"]) for a in found])
    assert names == expected_alerts(poster=False), names
    assert all(a["has_snapshot"] and a["violators"] == 1 for a in found)
    metrics = alerts.metrics()
    poster_faces = sum(
        who(box) == "poster" for e in entries for box in e.detections.pixels(e.width, e.height)
    )
    assert poster_faces == FRAMES  # the poster is found in every frame, and masked in each
    assert total(metrics, "facemask_alerts_faces_ignored_total", reason="ignore_mask") == (
        poster_faces
    )
    assert total(metrics, "facemask_alerts_total", camera_id=CAMERA) == len(found)
