"""The pipeline on a 3-master Redis Cluster: frame streams partitioned across the masters
(``redis+cluster://``), every frame processed, alerts consumed, cameras registered."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from facemask.dev.waiting import wait_until
from tests.fixtures.cluster import RedisCluster
from tests.fixtures.pipeline import Pipeline, http_json, slideshow_dir, total

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
CAMERAS = {
    "lobby": ["demo2.jpg"],
    "door": ["demo.png"],
    "yard": ["face.png"],
    "gate": ["demo2.jpg"],
}


def test_pipeline_on_a_three_master_cluster_processes_every_frame(
    redis_cluster: RedisCluster, pipeline_factory: Any, tmp_path: Path
) -> None:
    pipe: Pipeline = pipeline_factory(redis_cluster.url)
    layout = pipe.layout
    masters = {redis_cluster.node_of(layout.frames(p)) for p in range(layout.partitions)}
    assert len(masters) >= 2, "the partitions should spread over several masters"
    for p in range(layout.partitions):  # the hash tag keeps a partition on one master
        node = redis_cluster.node_of(layout.frames(p))
        assert redis_cluster.node_of(layout.detections(p)) == node
        assert redis_cluster.node_of(layout.deadletter(p)) == node

    inference = pipe.start_inference()
    alerts = pipe.start_alerts()
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    nodes = []
    for camera_id, images in CAMERAS.items():
        folder = slideshow_dir(tmp_path / "slides", camera_id, images)
        nodes.append(
            pipe.start_ingest(f"ingest-{camera_id}", f"id={camera_id},source={folder},fps=3")
        )
    used = {layout.partition_of(c) for c in CAMERAS}
    used_masters = {redis_cluster.node_of(layout.frames(p)) for p in used}
    assert len(used_masters) >= 2, "the cameras should publish to several masters"

    def enough() -> bool:
        for child in (inference, alerts, *nodes):
            if not child.alive():
                pytest.fail(f"{child.name} died:\n{child.log_tail()}")
        per_camera = Counter(e.camera_id for _s, e in pipe.detections())
        return all(per_camera[c] >= 10 for c in CAMERAS)

    wait_until(enough, 60, "10 frames of every camera processed", 0.5)
    for node in nodes:
        assert node.terminate() == 0, node.log_tail()
    pipe.wait_drained(60)
    frames = pipe.assert_every_frame_answered_once()
    assert set(Counter(frames.values())) == set(CAMERAS)
    entries = pipe.detections()
    assert total(inference.metrics(), "facemask_inference_requests_total", source="stream") == len(
        frames
    )
    assert total(alerts.metrics(), "facemask_alerts_detections_consumed_total") == len(entries)
    api = f"http://127.0.0.1:{alerts.ports['http']}"
    cameras = http_json(f"{api}/api/cameras")["cameras"]
    assert sorted(c["id"] for c in cameras) == sorted(CAMERAS)
