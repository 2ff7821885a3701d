"""Camera health with the real pipeline (Redis, inference with the real model, the alert
service and an ingest node as processes): a camera named in its config is ``live`` on the
API, and turns ``not_analysed`` within 10 seconds of the inference service stopping
while its node keeps publishing frames; ``/readyz`` of the alert service stays ready and
``/api/health`` names the camera."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from facemask.dev.waiting import wait_until
from tests.fixtures.pipeline import Pipeline, http_json, slideshow_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ACCEPTED_S = 10.0
"""The issue's bound: a stopped inference service shows on the API within this time."""


def test_a_stopped_inference_service_turns_the_camera_not_analysed_within_10_s(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    inference = pipe.start_inference()
    alerts = pipe.start_alerts()  # default analysis_timeout (5 s)
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    folder = slideshow_dir(tmp_path / "slides", "door", ["demo2.jpg", "face.png"])
    node = pipe.start_ingest("ingest-door", f"id=door,name=Front door,source={folder},fps=4")
    api = f"http://127.0.0.1:{alerts.ports['http']}"

    def door() -> dict[str, Any]:
        for child in (alerts, node):
            if not child.alive():
                pytest.fail(f"{child.name} died:\n{child.log_tail()}")
        cameras = http_json(f"{api}/api/cameras")["cameras"]
        return next((c for c in cameras if c["id"] == "door"), {"state": None})

    def settled(state: str) -> Any:
        # registered (the registry is cached for a second: at first the camera may be
        # listed from its detections alone), in the state, with a picture
        return lambda: (
            (doc := door())["state"] == state and doc["has_frame"] and doc["node"] and doc
        )

    live = wait_until(settled("live"), 90, "the camera live with a picture", 0.2)
    assert (live["name"], live["online"], live["status"]) == ("Front door", True, "up")
    # Inference stops (SIGTERM); the node keeps publishing frames.
    stopped = time.monotonic()
    assert inference.terminate(timeout=20.0) == 0
    quiet = wait_until(settled("not_analysed"), 20, "the camera not analysed", 0.2)
    took = time.monotonic() - stopped
    print(f"not_analysed {took:.1f} s after inference stopped")  # the report's figure
    assert took <= ACCEPTED_S, took
    assert quiet["online"] is True and quiet["status"] == "up"
    assert "while frames arrive" in quiet["state_reason"]
    health = http_json(f"{api}/api/health")
    assert health["status"] == "degraded" and health["ready"] is True
    assert [(p["id"], p["state"]) for p in health["problems"]] == [("door", "not_analysed")]
    with urllib.request.urlopen(f"{api}/readyz", timeout=5) as reply:
        assert reply.status == 200  # the alert service itself works
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert 'facemask_alerts_camera_state{camera_id="door",state="not_analysed"} 1.0' in text
