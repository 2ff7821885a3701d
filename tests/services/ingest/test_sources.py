"""Sources: spec parsing, the frame-rate cap at the source, looping, failures."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask.dev.localredis import free_port
from facemask.dev.supervisor import ChildSpec, Supervisor
from facemask.dev.waiting import wait_until
from facemask.infra.backoff import Backoff
from services.ingest.sources import (
    FileSource,
    ImageDirSource,
    LiveSource,
    SourceEnded,
    SourceError,
    SourceSpec,
    open_source,
    parse_source,
)
from tests.facemask.core.test_preprocess import patch_jpeg_size
from tests.services.ingest.conftest import write_clip

NEVER = threading.Event()


def read_all(source: FileSource | ImageDirSource, limit: int = 10_000) -> list[np.ndarray]:
    frames = []
    with pytest.raises(SourceEnded):
        for _ in range(limit):
            captured = source.read(NEVER)
            assert captured is not None
            frames.append(captured.image)
    return frames


def index_of(image: np.ndarray) -> int:
    """Frame index of a :func:`write_clip` frame (grey level 10 * index, lossy codec)."""
    return round(float(image.mean()) / 10)


def test_parse_source_kinds(tmp_path: Path, samples: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 3)
    assert parse_source("0") == SourceSpec("device", "0", 0)
    assert parse_source(" 2 ").device_index == 2
    assert parse_source("/dev/video0").kind == "device"
    assert parse_source("rtsp://cam.local:554/live").kind == "url"
    assert parse_source("HTTP://cam/mjpg").kind == "url"
    assert parse_source(str(clip)) == SourceSpec("file", str(clip))
    assert parse_source(f"file://{clip}") == SourceSpec("file", str(clip))
    assert parse_source(str(samples)).kind == "images"
    assert parse_source(str(samples / "a_demo.png")).kind == "images"
    assert parse_source("/later/clip.mp4", check_exists=False).kind == "file"
    for bad in ("", "  ", "-1", "ftp://x/y", "rtsp://", "/no/such/file.mp4", "file://"):
        with pytest.raises(ValueError):
            parse_source(bad)
    secret = parse_source("rtsp://admin:hunter2@10.0.0.5:554/s?x=1")
    assert secret.redacted == "rtsp://admin:***@10.0.0.5:554/s?x=1"
    assert parse_source("rtsp://10.0.0.5/s").redacted == "rtsp://10.0.0.5/s"


def test_file_cap_keeps_every_kth_frame_by_video_time(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 25)  # 1 s at 25 fps
    source = FileSource(parse_source(str(clip)), 5, realtime=False)
    source.open()
    frames = read_all(source)
    source.close()
    assert [index_of(f) for f in frames] == [0, 5, 10, 15, 20]
    assert source.take_skipped() == 20
    assert source.take_skipped() == 0
    # A rate above the file's keeps every frame; a rate that does not divide it keeps the
    # frames whose video time reached the next slot (7 fps over 1 s: 7 frames).
    for fps, expected in ((50, 25), (7, 7)):
        source = FileSource(parse_source(str(clip)), fps, realtime=False)
        source.open()
        assert len(read_all(source)) == expected
        source.close()


class FakeTime:
    """Monotonic and wall clocks that only move when a source waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []
        self.stop_during_wait = False

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.stop_during_wait:
            stop.set()
            return True
        self.now += seconds
        return stop.is_set()

    def timing(self) -> dict[str, object]:
        return {"clock": self.clock, "wall": self.wall, "wait": self.wait}


def test_file_plays_in_real_time(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 25)
    fake = FakeTime()
    source = FileSource(parse_source(str(clip)), 5, **fake.timing())
    source.open()
    started = fake.now
    stamps = [c.ts for c in (source.read(NEVER) for _ in range(5)) if c is not None]
    source.close()
    assert len(stamps) == 5
    # Kept frames are video times 0, 0.2, ..., 0.8 s, released at those (fake) times.
    assert fake.now - started == pytest.approx(0.8)
    assert np.diff(stamps) == pytest.approx([0.2] * 4)
    # A stop request interrupts the wait: the read returns nothing.
    source = FileSource(parse_source(str(clip)), 0.5, loop=True, **fake.timing())
    source.open()
    assert source.read(threading.Event()) is not None
    fake.stop_during_wait = True
    assert source.read(threading.Event()) is None
    assert fake.waits[-1] == pytest.approx(2.0)  # it was waiting for the next frame
    source.close()


def test_file_loops_and_notices_deletion(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 10)
    source = FileSource(parse_source(str(clip)), 25, loop=True, realtime=False)
    source.open()
    indices = [index_of(c.image) for c in (source.read(NEVER) for _ in range(25)) if c]
    assert indices == [*range(10), *range(10), *range(5)]
    assert source.passes == 2
    clip.unlink()
    with pytest.raises(SourceError, match="not found"):
        for _ in range(20):
            source.read(NEVER)
    source.close()
    with pytest.raises(SourceError):
        source.open()
    (tmp_path / "empty.mp4").write_bytes(b"not a video")
    broken = FileSource(parse_source(str(tmp_path / "empty.mp4")), 5)
    with pytest.raises(SourceError):
        broken.open()
        broken.read(NEVER)


def test_slideshow_loops_rereads_directory_and_fails_when_empty(
    tmp_path: Path, samples: Path
) -> None:
    (samples / "c_broken.jpg").write_bytes(b"not an image")
    source = open_source(parse_source(str(samples)), 100, realtime=False)
    assert isinstance(source, ImageDirSource)
    source.open()
    shapes = [c.image.shape for c in (source.read(NEVER) for _ in range(4)) if c is not None]
    first, second = shapes[0], shapes[1]
    assert first != second and shapes[2:] == [first, second]  # the broken file is skipped
    shutil.copy(samples / "a_demo.png", samples / "d_new.png")
    shapes = [c.image.shape for c in (source.read(NEVER) for _ in range(3)) if c is not None]
    assert shapes == [first, second, first]  # next pass lists d_new.png (a copy of a)
    for path in samples.iterdir():
        path.unlink()
    with pytest.raises(SourceError, match="no JPEG or PNG images"):
        for _ in range(5):
            source.read(NEVER)
    samples.rmdir()
    with pytest.raises(SourceError, match="not found"):
        source.open()


def test_slideshow_pace_and_single_pass(samples: Path) -> None:
    fake = FakeTime()
    source = ImageDirSource(parse_source(str(samples)), 10, loop=False, **fake.timing())
    source.open()
    assert len(read_all(source)) == 2
    # the second image 0.1 s after the first (then the end is found at the next slot)
    assert fake.waits == [pytest.approx(0.1), pytest.approx(0.1)]


def test_unreachable_url_fails_fast() -> None:
    source = LiveSource(parse_source(f"http://127.0.0.1:{free_port()}/feed.mjpg"), 5)
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot open url"):
        source.open()
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_live_stream_is_capped_by_grab_and_ends_with_an_error(
    group4_video: Path, tmp_path: Path
) -> None:
    """A real network stream: ffmpeg serves the clip over TCP in real time (25 fps)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed")
    port = free_port()
    server = Supervisor().start(
        ChildSpec(
            "ffmpeg",
            [
                *(ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-i", str(group4_video)),
                *("-t", "3", "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"),
            ],
            log_path=tmp_path / "ffmpeg.log",
        )
    )
    try:
        source = LiveSource(parse_source(f"tcp://127.0.0.1:{port}"), 5)

        def opened() -> bool:
            try:
                source.open()
            except SourceError:
                return False
            return True

        wait_until(opened, 10, "the ffmpeg stream to open", 0.2)
        stamps: list[float] = []
        skipped = 0
        with pytest.raises(SourceError, match="delivered no frame"):
            while True:
                captured = source.read(NEVER)
                assert captured is not None and captured.image.shape == (506, 960, 3)
                stamps.append(captured.ts)
                skipped += source.take_skipped()
        source.close()
    finally:
        server.kill()
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 4.5 <= rate <= 5.5, rate
    assert skipped >= 3 * len(stamps)  # ~4 of 5 frames grabbed and dropped at the source


def test_backoff_grows_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(8)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(d <= 4.0 for d in delays) and delays[-1] >= 3.2
    assert delays[3] > delays[1] > delays[0]
    backoff.reset()
    assert backoff.next() <= 0.6
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_image_loaded_matches_file(samples: Path) -> None:
    source = ImageDirSource(parse_source(str(samples / "a_demo.png")), 50, realtime=False)
    source.open()
    captured = source.read(NEVER)
    assert captured is not None
    expected = cv2.imread(str(samples / "a_demo.png"))
    assert np.array_equal(captured.image, expected)


def test_slideshow_skips_a_decompression_bomb_and_refuses_unchecked_formats(
    samples: Path,
) -> None:
    small = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    (samples / "0_bomb.jpg").write_bytes(patch_jpeg_size(small, 16000, 16000))
    source = open_source(parse_source(str(samples)), 100, realtime=False)
    source.open()
    frames = [source.read(NEVER) for _ in range(3)]
    shapes = [c.image.shape for c in frames if c is not None]
    # the bomb is refused from its header (never decoded): the two real images alternate
    assert len(shapes) == 3 and shapes[0] != shapes[1] and shapes[2] == shapes[0]
    assert all(h * w < 16000 * 16000 for h, w, _ in shapes)
    cv2.imwrite(str(samples / "picture.bmp"), np.zeros((8, 8, 3), np.uint8))
    single = open_source(parse_source(str(samples / "picture.bmp")), 100, realtime=False)
    with pytest.raises(SourceError, match="only JPEG and PNG"):
        single.open()
