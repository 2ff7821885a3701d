"""Helpers of the ingest tests: settings with short delays, clips, stream readers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import FrameEntry
from services.ingest.config import IngestSettings
from services.ingest.metrics import IngestMetrics
from services.ingest.worker import IngestWorker
from tests.fixtures.paths import SHARED_DIR, require

SAMPLES = SHARED_DIR / "data" / "samples"
VIDEO = SHARED_DIR / "data" / "video"


def fast_settings(redis_url: str, cameras: list[Any], **overrides: Any) -> IngestSettings:
    """Settings for tests: short backoffs and heartbeats, text logs."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "cameras": cameras,
        "node_name": "test-node",
        "redis_backoff_initial": 0.1,
        "redis_backoff_max": 0.5,
        "source_backoff_initial": 0.2,
        "source_backoff_max": 1.0,
        "heartbeat_interval": 0.5,
        "camera_ttl": 5,
        "shutdown_timeout": 3.0,
        "log_format": "text",
    }
    values.update(overrides)
    return IngestSettings(**values)


@contextmanager
def running(settings: IngestSettings) -> Iterator[IngestWorker]:
    """A started worker, shut down (and checked to exit 0) afterwards."""
    worker = IngestWorker(settings, metrics=IngestMetrics())
    worker.start()
    try:
        yield worker
    finally:
        assert worker.shutdown() == 0


def frames_of(client: redis.Redis, layout: StreamLayout, camera_id: str) -> list[FrameEntry]:
    """Every entry of the camera's frame stream that belongs to the camera, parsed."""
    out = []
    for _sid, fields in client.xrange(layout.frames_for(camera_id)):
        entry = FrameEntry.from_fields(fields)
        if entry.camera_id == camera_id:
            out.append(entry)
    return out


def write_clip(path: Path, frames: int, *, fps: float = 25.0, size: tuple[int, int] = (160, 120)):
    """A small MPEG-4 clip whose frame ``i`` is uniformly grey ``(i * 10) % 250``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 10) % 250, np.uint8))
    writer.release()
    return path


@pytest.fixture()
def samples(tmp_path: Path) -> Path:
    """A directory with two small images (made here; the shared samples when present)."""
    out = tmp_path / "samples"
    out.mkdir()
    if SAMPLES.is_dir():
        shutil.copy(SAMPLES / "demo.png", out / "a_demo.png")
        shutil.copy(SAMPLES / "demo2.jpg", out / "b_demo2.jpg")
    else:
        rng = np.random.default_rng(0)
        for name in ("a_demo.png", "b_demo2.jpg"):
            cv2.imwrite(str(out / name), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    return out


@pytest.fixture(scope="session")
def group4_video() -> Path:
    """The shared 960x506 25 fps clip (skip when the shared data is absent)."""
    return require(VIDEO / "group4_masks.mp4")
