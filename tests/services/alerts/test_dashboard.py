"""The dashboard in headless Chromium (Debian's, driven by Playwright): camera tiles with
live pictures and status, and a new alert appearing in the feed without a reload."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    PERSON_B,
    Clip,
    Feeder,
    bare,
    fast_settings,
    masked,
    register_camera,
    running,
)
from tests.services.alerts.test_service import feed_clip

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKEN = "dashboard-token"

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture()
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class LiveCamera(threading.Thread):
    """Keeps a camera's frames and detections flowing at 5 fps, as the pipeline would."""

    def __init__(self, client: redis.Redis, camera_id: str, jpeg: tuple[bytes, int, int]) -> None:
        super().__init__(daemon=True)
        self.feed = Feeder(client, camera_id, jpeg)
        self.faces = [masked(PERSON_A), masked(PERSON_B, 0.88)]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.feed.ts = time.time()
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
            # The clip's five alerts (four people, one mask-off; the poster is smaller
            # than min_face) are in the feed, with thumbnails.
            page.wait_for_selector("#alerts li >> nth=4", timeout=10000)
            before = page.locator("#alerts li").count()
            assert before == 5
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
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.context.add_cookies(page.context.cookies())
            phone.goto(f"http://127.0.0.1:{service.port}/")
            phone.wait_for_selector(".tile.has-picture >> nth=1", timeout=15000)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390  # no horizontal scrolling on a phone
            phone.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
        finally:
            live.stop.set()
            live.join(5)
    out = os.environ.get("FACEMASK_TEST_OUTPUT")
    if out:  # keep the screenshots beyond pytest's temporary directories
        Path(out).mkdir(parents=True, exist_ok=True)
        for name in ("dashboard.png", "dashboard-phone.png"):
            shutil.copy(tmp_path / name, Path(out) / name)
