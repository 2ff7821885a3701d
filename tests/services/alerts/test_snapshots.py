"""Snapshots: drawing (the violator singled out, a crop beside), files (the clean frame
kept as captured), retention by age and size; the cached live frame."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from facemask.contracts.wire import FrameEntry
from facemask.core.annotate import HIGHLIGHT_RGB
from facemask.dev.localredis import RedisProcess
from services.alerts import snapshots
from services.alerts.snapshots import (
    SNAPSHOT_MAX_SIDE,
    THUMB_WIDTH,
    LatestFrames,
    SnapshotStore,
    fetch_frame,
    ignored_rows,
    render,
    render_alert,
)
from tests.facemask.core.test_preprocess import patch_jpeg_size
from tests.fixtures.images import refuse_decodes
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
    # A frame drawn at a reduced size still gets the boxes at the right place.
    half = render(frame(grey_jpeg(640, 480), 640, 480), dets, max_side=320)
    assert half is not None and half.shape == (240, 320, 3) and colour_near(half, 200, 120, RED)
    rejected: list[str] = []
    assert render(frame(b"not a jpeg"), dets, on_reject=rejected.append) is None
    assert rejected == ["unsupported_format"]


@pytest.mark.parametrize(
    ("data", "declared", "reason"),
    [
        # the image is not the size its frame entry declares: no picture, counted
        (grey_jpeg(160, 120), (320, 240), "size_mismatch"),
        (grey_jpeg(320, 240), (640, 480), "size_mismatch"),
        # issue 13: a tiny JPEG whose header claims 16000x16000, declared 640x480
        (patch_jpeg_size(grey_jpeg(64, 48), 16000, 16000), (640, 480), "too_large"),
        (patch_jpeg_size(grey_jpeg(64, 48), 6000, 6000), (640, 480), "size_mismatch"),
        (grey_jpeg(320, 240)[:30], (320, 240), "corrupt_image"),
    ],
)
@pytest.mark.usefixtures("no_decode")  # rejected on the header alone
def test_frames_that_lie_about_their_size_get_no_picture(
    data: bytes, declared: tuple[int, int], reason: str
) -> None:
    rejected: list[str] = []
    dets = faces_of([("no_mask", 0.8, (20, 20, 60, 60))], *declared)
    assert render(frame(data, *declared), dets, on_reject=rejected.append) is None
    assert rejected == [reason]


def test_large_frames_are_decoded_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode itself is reduced (libjpeg's scaled IDCT), not a full decode shrunk."""
    decoded: list[tuple[int, int]] = []
    real = snapshots.decode_image

    def spy(data: bytes, **options: Any) -> Any:
        image = real(data, **options)
        decoded.append((image.rgb.shape[1], image.rgb.shape[0]))
        return image

    monkeypatch.setattr(snapshots, "decode_image", spy)
    dets = faces_of([("no_mask", 0.8, (200, 200, 600, 600))], 2560, 1920)
    image = render(frame(grey_jpeg(2560, 1920), 2560, 1920), dets, max_side=320)
    assert image is not None and image.shape == (240, 320, 3)
    assert decoded == [(320, 240)]  # 1/8
    # Alert snapshots are capped too (SNAPSHOT_MAX_SIDE), decoded at 1/2 here.
    decoded.clear()
    image = render(frame(grey_jpeg(3840, 2160), 3840, 2160), dets)
    assert image is not None and max(image.shape) == SNAPSHOT_MAX_SIDE
    assert decoded == [(1920, 1080)]


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add(client: redis.Redis, data: bytes, width: int = 320, height: int = 240) -> str:
    sid: bytes = client.xadd(
        LAYOUT.frames_for("lobby"),
        frame(data, width, height).to_fields(),  # type: ignore[arg-type]
    )
    return sid.decode()


def _entry(sid: str, width: int = 320, height: int = 240) -> dict[str, object]:
    return {"frame_sid": sid, "w": width, "h": height, "dets": []}


def test_latest_frame_is_cached_and_rate_limited(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    key = LAYOUT.frames_for("lobby")
    sid1, sid2 = _add(redis_client, grey_jpeg()), _add(redis_client, grey_jpeg())
    assert fetch_frame(redis_client, key, sid1) is not None
    assert fetch_frame(redis_client, key, "1-0") is None  # trimmed / unknown
    renders: list[int] = []
    clock = FakeClock()
    latest = LatestFrames(
        redis_client, min_interval=0.3, on_render=lambda: renders.append(1), clock=clock
    )
    first = latest.get("lobby", _entry(sid1), key)
    assert first is not None and first[0] == sid1
    assert latest.get("lobby", _entry(sid2), key)[0] == sid1  # type: ignore[index]
    assert len(renders) == 1  # within min_interval: the cached picture
    clock.now += 0.35
    assert latest.get("lobby", _entry(sid2), key)[0] == sid2  # type: ignore[index]
    assert len(renders) == 2
    clock.now += 0.35
    # The frame is gone from the stream: keep showing the last picture.
    assert latest.get("lobby", _entry("1-0"), key)[0] == sid2  # type: ignore[index]
    assert latest.get("door", None, None) is None


def test_latest_frame_rejects_a_lying_frame_and_keeps_the_last_picture(
    redis_server: RedisProcess, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = LAYOUT.frames_for("lobby")
    good = _add(redis_client, grey_jpeg())
    # Declared 640x480 in its entry; really a JPEG whose header says 16000x16000 (issue 13).
    bomb = _add(redis_client, patch_jpeg_size(grey_jpeg(64, 48), 16000, 16000), 640, 480)
    big = _add(redis_client, grey_jpeg(1280, 960), 640, 480)  # real, but not as declared
    rejected: list[str] = []
    clock = FakeClock()
    latest = LatestFrames(redis_client, min_interval=0.1, on_reject=rejected.append, clock=clock)
    assert latest.get("lobby", _entry(good), key)[0] == good  # type: ignore[index]
    refuse_decodes(monkeypatch)  # from here on, judged on the header alone
    for sid in (bomb, big, bomb):
        clock.now += 1
        assert latest.get("lobby", _entry(sid, 640, 480), key)[0] == good  # type: ignore[index]
    assert rejected == ["too_large", "size_mismatch", "too_large"]
    # the same rejected frame again (another browser, later): judged once, counted once
    clock.now += 1
    assert latest.get("lobby", _entry(bomb, 640, 480), key)[0] == good  # type: ignore[index]
    assert rejected == ["too_large", "size_mismatch", "too_large"]
    fresh = LatestFrames(redis_client, on_reject=rejected.append, clock=clock)
    for _ in range(3):
        clock.now += 1
        assert fresh.get("door", _entry(bomb, 640, 480), key) is None  # nothing to show
    assert rejected[3:] == ["too_large"] and len(fresh) == 1 and fresh.cached_bytes == 0
    # a good frame later gets its picture
    monkeypatch.undo()
    clock.now += 1
    assert fresh.get("door", _entry(good), key)[0] == good  # type: ignore[index]


def test_latest_frame_cache_is_bounded_in_entries_and_bytes(
    redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    key = LAYOUT.frames_for("lobby")
    noisy = cv2.imencode(
        ".jpg", np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    )[1].tobytes()
    sid = _add(redis_client, noisy)
    latest = LatestFrames(redis_client, max_entries=3, max_bytes=10**9)
    for camera in ("a", "b", "c", "d"):
        assert latest.get(camera, _entry(sid), key) is not None
    assert len(latest) == 3
    size = latest.cached_bytes // 3
    # "a" was the least recently used: evicted; its next request renders again.
    renders: list[int] = []
    latest.on_render = lambda: renders.append(1)
    latest.get("b", _entry(sid), key)
    assert renders == []
    latest.get("a", _entry(sid), key)
    assert renders == [1] and len(latest) == 3
    # A byte budget of two pictures keeps two, whatever the number of cameras.
    small = LatestFrames(redis_client, max_entries=100, max_bytes=2 * size + size // 2)
    for camera in ("a", "b", "c", "d", "e"):
        assert small.get(camera, _entry(sid), key) is not None
    assert len(small) == 2 and small.cached_bytes <= 2 * size + size // 2
    # A picture larger than the whole budget is served, never kept.
    tiny = LatestFrames(redis_client, max_bytes=16)
    assert tiny.get("a", _entry(sid), key) is not None
    assert len(tiny) == 0 and tiny.cached_bytes == 0


def test_latest_frame_decodes_are_bounded_whatever_the_cameras(
    redis_server: RedisProcess, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import services.alerts.snapshots as snapshots
    from facemask.dev.waiting import wait_until

    sid = _add(redis_client, grey_jpeg())
    key = LAYOUT.frames_for("lobby")
    lock, gate = threading.Lock(), threading.Event()
    state = {"fetched": 0, "active": 0, "peak": 0}
    real_fetch, real_render = snapshots.fetch_frame, snapshots.render

    def fetch(*args: Any) -> Any:
        with lock:
            state["fetched"] += 1
        return real_fetch(*args)

    def render(*args: Any, **kwargs: Any) -> Any:
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            assert gate.wait(10)
            return real_render(*args, **kwargs)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(snapshots, "fetch_frame", fetch)
    monkeypatch.setattr(snapshots, "render", render)
    latest = LatestFrames(redis_client, max_concurrent=2)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(latest.get(c, _entry(sid), key)))
        for c in ("a", "b", "c", "d", "e")
    ]
    for thread in threads:
        thread.start()
    try:
        # every browser has fetched its frame; only two decode, the others wait their turn
        wait_until(lambda: state["fetched"] == 5 and state["active"] == 2, 10, "renders")
        assert state["peak"] == 2
    finally:
        gate.set()
        for thread in threads:
            thread.join(10)
    assert len(results) == 5 and all(r is not None and r[0] == sid for r in results)
    assert state["peak"] == 2


# -- issue 14: the violator singled out, the clean frame kept ----------------------------

AMBER = np.array(HIGHLIGHT_RGB[::-1])  # BGR


def test_alert_pictures_single_out_the_violator_with_a_crop_beside() -> None:
    faces = [
        ("mask", 0.9, (20, 60, 100, 160)),
        ("no_mask", 0.8, (120, 60, 180, 160)),
        ("no_mask", 0.93, (200, 60, 280, 160)),  # the violator
    ]
    dets = faces_of(faces, 320, 240)
    data = grey_jpeg()
    pictures = render_alert(frame(data), dets, [(200, 60, 280, 160)])
    assert pictures is not None
    image, thumb = pictures.image, pictures.thumbnail
    assert image.shape == (240, 320 + 107, 3)  # the frame and a panel a third as wide
    assert colour_near(image, 20, 120, GREEN)
    assert colour_near(image, 120, 120, RED)  # another bare face: still red
    assert colour_near(image, 200, 120, AMBER) and not colour_near(image, 200, 120, RED)
    # The crop (the grey frame around the face, framed amber) fills the panel.
    panel = image[:, 320:]
    assert colour_near(panel, 53, 120, np.array([128, 128, 128]))
    assert (np.abs(panel.reshape(-1, 3).astype(int) - AMBER).sum(axis=1) < 60).any()
    # The thumbnail is THUMB_WIDTH wide in all, drawn at its own size (boxes not blurred).
    assert thumb.shape[1] == THUMB_WIDTH and thumb.shape[0] == round(240 * 240 / 320)
    assert colour_near(thumb, 150, 90, AMBER)  # 200 * 0.75: the violator's left edge


def test_alert_pictures_of_a_large_frame_and_of_a_box_that_is_no_face() -> None:
    dets = faces_of([("no_mask", 0.9, (800, 400, 1200, 900))], 2560, 1920)
    pictures = render_alert(frame(grey_jpeg(2560, 1920), 2560, 1920), dets, [(800, 400, 1200, 900)])
    assert pictures is not None
    assert pictures.image.shape == (1440, 1920 + 640, 3)  # decoded reduced to 1920
    assert colour_near(pictures.image, 600, 500, AMBER)  # 800 * 0.75
    # A violator box not among the faces still gets its crop; no face is highlighted.
    other = render_alert(frame(grey_jpeg()), faces_of([], 320, 240), [(10, 10, 50, 50)])
    assert other is not None and other.image.shape == (240, 427, 3)
    # Without violators there is no panel.
    plain = render_alert(frame(grey_jpeg()), dets, [])
    assert plain is not None and plain.image.shape == (240, 320, 3)
    assert plain.thumbnail.shape[1] == THUMB_WIDTH
    rejected: list[str] = []
    assert render_alert(frame(b"junk"), dets, [], on_reject=rejected.append) is None
    assert rejected == ["unsupported_format"]


@pytest.mark.parametrize(("encoding", "suffix"), [("jpeg", ".frame.jpg"), ("png", ".frame.png")])
def test_the_clean_frame_is_kept_byte_for_byte(tmp_path: Path, encoding: str, suffix: str) -> None:
    store = SnapshotStore(tmp_path, max_age=3600, max_bytes=1 << 20)
    ok, png = cv2.imencode(".png", np.full((240, 320, 3), 7, np.uint8))
    assert ok
    data = grey_jpeg() if encoding == "jpeg" else png.tobytes()
    entry = FrameEntry("lobby", 1, 1714564800.0, encoding, 320, 240, data)
    image = np.zeros((240, 427, 3), np.uint8)
    saved = store.save("f" * 32, 1714564800.0, image, frame=entry)
    assert saved.frame == f"2024-05-01/{'f' * 32}{suffix}"
    kept = store.path(saved.frame)
    assert kept is not None and kept.read_bytes() == data
    assert store.save("e" * 32, 1714564800.0, image).frame is None  # no frame given
    # The clean frame is one more picture under the same retention.
    assert kept in [p for _m, _s, p in store.files()]
    os.utime(kept, (time.time() - 7200, time.time() - 7200))
    assert store.enforce_retention()["age"] == 1 and store.path(saved.frame) is None


@pytest.mark.parametrize(
    ("latest", "rows"),
    [
        ({"dets": [[0], [1], [2]], "ignored": [2, 0]}, [2, 0]),
        ({"dets": [[0]]}, []),  # stored by an older version: nothing muted
        ({"dets": [[0]], "ignored": [0, 5, -1, "1", 0.0]}, [0]),  # out of range / not ints
        ({"dets": [[0]], "ignored": "0"}, []),
        ({"dets": None, "ignored": [0]}, []),
    ],
)
def test_ignored_rows_of_a_latest_record(latest: dict[str, object], rows: list[int]) -> None:
    assert ignored_rows(latest) == rows
