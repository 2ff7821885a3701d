"""Snapshots: drawing, files, retention by age and size; the cached live frame."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import redis

from facemask.contracts.wire import FrameEntry
from facemask.dev.localredis import RedisProcess
from services.alerts.snapshots import LatestFrames, SnapshotStore, fetch_frame, render
from tests.services.alerts.conftest import LAYOUT, faces_of

GREEN = np.array([0, 255, 0])  # BGR
RED = np.array([0, 0, 255])


def grey_jpeg(width: int = 320, height: int = 240) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def frame(data: bytes, width: int = 320, height: int = 240) -> FrameEntry:
    return FrameEntry("lobby", 1, time.time(), "jpeg", width, height, data)


def colour_near(image: np.ndarray, x: int, y: int, colour: np.ndarray) -> bool:
    patch = image[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - colour).sum(axis=1) < 120).any())


def test_render_draws_green_masks_and_red_bare_faces() -> None:
    dets = faces_of(
        [("mask", 0.9, (20, 60, 100, 160)), ("no_mask", 0.8, (200, 60, 280, 160))], 320, 240
    )
    image = render(frame(grey_jpeg()), dets)
    assert image is not None and image.shape == (240, 320, 3)
    assert colour_near(image, 20, 120, GREEN)  # left edge of the mask box
    assert colour_near(image, 200, 120, RED)  # left edge of the no-mask box
    assert colour_near(image, 60, 110, np.array([128, 128, 128]))  # inside: untouched
    # A frame decoded at another size still gets the boxes at the right place.
    half = render(frame(grey_jpeg(160, 120)), dets)
    assert half is not None and colour_near(half, 100, 60, RED)
    assert render(frame(b"not a jpeg"), dets) is None


def test_save_and_retention(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_age=3600, max_bytes=1024 * 1024)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    now = time.time()
    saved = [store.save(f"{i:032x}", now, image) for i in range(6)]
    for s in saved:
        path = store.path(s.image)
        thumb = store.path(s.thumbnail)
        assert path is not None and thumb is not None
        decoded = cv2.imread(str(thumb))
        assert decoded.shape[1] == 320
    assert store.path("../../etc/passwd") is None
    # Age: make the first two 2 h old.
    for s in saved[:2]:
        for rel in (s.image, s.thumbnail):
            p = store.path(rel)
            assert p is not None
            os.utime(p, (now - 7200, now - 7200))
    result = store.enforce_retention(now)
    assert result["age"] == 4 and result["size"] == 0
    assert store.path(saved[0].image) is None and store.path(saved[2].image) is not None
    # Size: cap below what is left; the oldest go first until the total fits.
    files = store.files()
    total = sum(size for _m, size, _p in files)
    for i, (_m, _s, p) in enumerate(files):
        os.utime(p, (now - 100 + i, now - 100 + i))
    store.max_bytes = total - 1
    result = store.enforce_retention(now)
    assert result["size"] >= 1 and result["bytes"] <= total - 1
    remaining = store.files()
    assert remaining and min(m for m, _s, _p in remaining) > now - 100


def test_latest_frame_is_cached_and_rate_limited(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    key = LAYOUT.frames_for("lobby")
    sid1 = redis_client.xadd(key, frame(grey_jpeg()).to_fields()).decode()  # type: ignore[arg-type]
    sid2 = redis_client.xadd(key, frame(grey_jpeg()).to_fields()).decode()  # type: ignore[arg-type]
    assert fetch_frame(redis_client, key, sid1) is not None
    assert fetch_frame(redis_client, key, "1-0") is None  # trimmed / unknown
    renders: list[int] = []
    latest = LatestFrames(redis_client, min_interval=0.3, on_render=lambda: renders.append(1))
    entry = {"frame_sid": sid1, "w": 320, "h": 240, "dets": []}
    first = latest.get("lobby", entry, key)
    assert first is not None and first[0] == sid1
    assert latest.get("lobby", {**entry, "frame_sid": sid2}, key)[0] == sid1  # type: ignore[index]
    assert len(renders) == 1  # within min_interval: the cached picture
    time.sleep(0.35)
    assert latest.get("lobby", {**entry, "frame_sid": sid2}, key)[0] == sid2  # type: ignore[index]
    assert len(renders) == 2
    time.sleep(0.35)
    # The frame is gone from the stream: keep showing the last picture.
    assert latest.get("lobby", {**entry, "frame_sid": "1-0"}, key)[0] == sid2  # type: ignore[index]
    assert latest.get("door", None, None) is None
