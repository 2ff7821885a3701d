"""The dashboard in headless Chromium (Debian's, driven by Playwright): camera tiles with
live pictures and status, and a new alert appearing in the feed without a reload."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from tests.fixtures.browser import VIEWPORTS, screenshot_dir
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    PERSON_B,
    Clip,
    Face,
    Feeder,
    bare,
    drained,
    fast_settings,
    masked,
    register_camera,
    running,
)
from tests.services.alerts.test_service import feed_clip

TOKEN = "dashboard-token"


class LiveCamera(threading.Thread):
    """Keeps a camera's frames and detections flowing at 5 fps, as the pipeline would: its
    node's heartbeat says a frame was just published (``last_frame_ts``), and the frame's
    detections entry follows. ``analysed = False`` stands for a stopped inference service:
    the node keeps publishing, no detections follow."""

    def __init__(
        self,
        client: redis.Redis,
        camera_id: str,
        jpeg: tuple[bytes, int, int],
        faces: list[Face] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.feed = Feeder(client, camera_id, jpeg)
        self.faces = faces if faces is not None else [masked(PERSON_A), masked(PERSON_B, 0.88)]
        self.analysed = True
        self.stop = threading.Event()

    def run(self) -> None:
        key = LAYOUT.camera(self.feed.camera_id)
        while not self.stop.wait(0.2):
            now = time.time()
            if self.client.exists(key):  # registered: its node heart-beats
                self.client.hset(
                    key, mapping={"last_seen": f"{now:.3f}", "last_frame_ts": f"{now:.3f}"}
                )
            if self.analysed:
                self.feed.ts = now
                self.feed.frame(self.faces)


@pytest.mark.slow
def test_dashboard_shows_cameras_and_live_alerts(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    group4_clip: Clip,
    sample_jpeg: tuple[bytes, int, int],
    browser: Any,
    tmp_path: Path,
) -> None:
    settings = fast_settings(
        redis_server.url,
        tmp_path / "state",
        api_token=TOKEN,
        cooldown=3.0,
        rules={"entrance": {"min_face": 40}},
    )
    register_camera(redis_client, "entrance", name="Entrance", location="Ground floor")
    register_camera(redis_client, "reception", name="Reception", location="Lobby desk")
    register_camera(redis_client, "garage", name="Garage", location="Level -1")
    with running(settings) as service:
        wait_until(lambda: len(service.board.cameras()) == 3, 5, "registry read")
        redis_client.delete(LAYOUT.camera("garage"))  # its node stopped heart-beating
        feed_clip(redis_client, "entrance", group4_clip, time.time() - 17)
        wait_until(lambda: drained(redis_client), 15, "the clip's detections processed")
        stored = httpx.get(
            f"http://127.0.0.1:{service.port}/api/alerts",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5.0,
        ).json()["alerts"]
        assert len(stored) == 5  # four people, one mask-off (the poster is below min_face)
        live = LiveCamera(redis_client, "reception", sample_jpeg)
        live.start()
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 860})
            page.goto(f"http://127.0.0.1:{service.port}/?token={TOKEN}")
            assert page.url.endswith("/")  # the token left the address bar (cookie set)
            page.wait_for_selector(".tile.has-picture >> nth=1", timeout=15000)
            tiles = page.locator(".tile")
            assert tiles.count() == 3
            names = page.locator(".tile .name").all_inner_texts()
            assert names == ["Entrance", "Garage", "Reception"]
            assert page.locator(".tile.offline .name").inner_text() == "Garage"
            reception = page.locator('.tile[data-camera="reception"]')
            wait_until(
                lambda: reception.locator(".compliance").inner_text() == "100% masked",
                10,
                "reception compliance",
            )
            # The alerts of the recorded clip are in the feed, newest first.
            page.wait_for_selector("#alerts li", timeout=10000)
            before = page.locator("#alerts li").count()
            shown = [
                page.locator("#alerts li").nth(i).get_attribute("data-alert") for i in range(before)
            ]
            assert shown == [a["id"] for a in stored]
            page.evaluate("window.__noReload = true")
            page.wait_for_selector("#live[data-state=live]", timeout=10000)

            # Someone at reception takes the mask off: a new alert arrives live.
            live.faces = [masked(PERSON_A), bare(PERSON_B)]
            page.wait_for_selector("#alerts li.fresh", timeout=15000)
            assert page.locator("#alerts li").count() == before + 1
            assert page.evaluate("window.__noReload") is True
            first = page.locator("#alerts li").first
            assert "Reception" in first.locator(".where").inner_text()
            page.wait_for_function(
                "document.querySelector('#alerts li .thumb').naturalWidth === 320",
                timeout=10000,
            )
            time.sleep(0.6)  # let the tiles' next pictures land before the screenshot
            shots = screenshot_dir(tmp_path)
            shot = shots / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000

            phone = browser.new_page(**VIEWPORTS["phone"])
            phone.context.add_cookies(page.context.cookies())
            phone.goto(f"http://127.0.0.1:{service.port}/")
            phone.wait_for_selector(".tile.has-picture >> nth=1", timeout=15000)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390  # no horizontal scrolling on a phone
            phone.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)
        finally:
            live.stop.set()
            live.join(5)
