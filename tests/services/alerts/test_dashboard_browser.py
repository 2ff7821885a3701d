"""The dashboard in headless Chromium, at desktop and phone sizes, against the real alert
service and Redis: camera tiles driven by each camera's state (a picture polled only while
the camera has one, a frozen picture never looking live), the camera view (``#camera/<id>``:
live picture, zone editor, Back and Escape close it), an ignore mask drawn by clicks and
checked through the API in frame-relative coordinates, the review buttons and filters of
the alert feed, the removal of a stale camera, and clear messages for refused writes.
Every page is watched: no failed request, no HTTP error, no console error.

Screenshots (``FACEMASK_SCREENSHOTS``, else the test's tmp_path): ``<size>-board.png``,
``<size>-camera-view.png`` (with the drawn mask), ``<size>-alerts-reviewed.png``,
``<size>-not-analysed.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.service import AlertService
from tests.fixtures.browser import VIEWPORTS, PageWatch, screenshot_dir
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    PERSON_C,
    Feeder,
    bare,
    fast_settings,
    masked,
    register_camera,
    running,
)
from tests.services.alerts.test_dashboard import LiveCamera

TOKEN = "board-token"
REVIEWER = "Test reviewer"
MASK = [(0.12, 0.1), (0.46, 0.14), (0.42, 0.62), (0.14, 0.55)]
"""The ignore mask drawn, frame-relative: one click per corner."""
TOLERANCE = 0.01
"""A click lands on a whole CSS pixel: under 1/100 of the picture even on a phone."""
DOOR_ERROR = "connect rtsp://door.example/stream: connection refused"

pytestmark = pytest.mark.slow


@dataclass
class Board:
    """A running service with four cameras: entrance (live, faces streaming), hall (two
    seconds of an unmasked face, then silence), door (its node cannot reach the source:
    no frames) and garage (its node stopped heart-beating: offline)."""

    service: AlertService
    api: httpx.Client
    live: LiveCamera
    base: str

    def alerts(self, camera_id: str) -> list[dict[str, Any]]:
        response = self.api.get("/api/alerts", params={"camera_id": camera_id})
        response.raise_for_status()
        return list(response.json()["alerts"])


@contextmanager
def board(
    redis_server: RedisProcess,
    client: redis.Redis,
    jpeg: tuple[bytes, int, int],
    state_dir: Path,
    **overrides: Any,
) -> Iterator[Board]:
    settings = fast_settings(redis_server.url, state_dir, api_token=TOKEN, **overrides)
    register_camera(client, "entrance", name="Entrance", location="Ground floor", ttl=600)
    register_camera(client, "hall", name="Hall", ttl=600)
    register_camera(client, "door", name="Back door", status="reconnecting", ttl=600)
    client.hset(LAYOUT.camera("door"), "last_error", DOOR_ERROR)
    register_camera(client, "garage", name="Garage")
    with running(settings) as service:
        base = f"http://127.0.0.1:{service.port}"
        wait_until(lambda: len(service.board.cameras()) == 4, 5, "registry read")
        client.delete(LAYOUT.camera("garage"))  # its node stopped heart-beating
        Feeder(client, "hall", jpeg, start_ts=time.time() - 2).frames(10, [bare(PERSON_A)])
        live = LiveCamera(client, "entrance", jpeg, faces=[masked(PERSON_A), bare(PERSON_C)])
        live.start()
        try:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10.0
            ) as api:
                found = Board(service, api, live, base)
                wait_until(lambda: found.alerts("hall") and found.alerts("entrance"), 15, "alerts")
                yield found
        finally:
            live.stop.set()
            live.join(5)


def new_page(browser: Any, size: str, watch: PageWatch) -> Any:
    context = browser.new_context(**VIEWPORTS[size])
    context.set_default_timeout(15000)
    return watch.attach(context.new_page())


def press(page: Any, size: str, locator: Any, **position: Any) -> None:
    """A tap on the phone, a click on the desktop (``position``: relative to the element)."""
    if size == "phone":
        locator.tap(**position)
    else:
        locator.click(**position)


VIEW_OPEN = "document.querySelector('#camera-view').open"


def shoot(page: Any, path: Path) -> None:
    """A screenshot of the whole page, from its top (the sticky header where it belongs)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)


def camera_view_open(page: Any) -> bool:
    return bool(page.evaluate(VIEW_OPEN))


def alert_row(alert_id: str | None, review: str = "") -> str:
    """The selector of an alert's row in the feed (in a review state)."""
    return f'#alerts li[data-alert="{alert_id}"]' + (f'[data-review="{review}"]' if review else "")


def draw_polygon(page: Any, size: str, kind: str, points: list[tuple[float, float]]) -> None:
    """Draw a polygon on the open camera view: one click per corner, then close it."""
    press(page, size, page.get_by_role("button", name=f"Add {kind}"))
    canvas = page.locator(".cv-canvas")
    box = canvas.bounding_box()
    assert box and box["width"] > 100, box
    for x, y in points:
        press(page, size, canvas, position={"x": x * box["width"], "y": y * box["height"]})
    press(page, size, page.get_by_role("button", name="Close polygon"))


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_board_camera_view_zones_and_review(
    size: str,
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    browser: Any,
    tmp_path: Path,
) -> None:
    shots = screenshot_dir(tmp_path)
    watch = PageWatch()
    with board(redis_server, redis_client, sample_jpeg, tmp_path / "state") as b:
        page = new_page(browser, size, watch)
        page.goto(f"{b.base}/?token={TOKEN}")

        # -- the board: one tile per camera, its state on it -------------------------------
        entrance = page.locator('.tile[data-camera="entrance"]')
        page.wait_for_selector('.tile[data-camera="entrance"][data-state="live"].has-picture')
        assert page.locator(".tile .name").all_inner_texts() == [
            "Back door",
            "Entrance",
            "Garage",
            "Hall",
        ]
        door = page.locator('.tile[data-camera="door"]')
        assert door.get_attribute("data-state") == "no_frames"
        assert door.locator(".badge").inner_text().lower() == "no frames"
        assert DOOR_ERROR in door.locator(".reason").inner_text()
        garage = page.locator('.tile[data-camera="garage"]')
        assert garage.get_attribute("data-state") == "offline"
        assert garage.get_by_role("button", name="Remove camera").is_visible()
        assert entrance.locator(".badge").inner_text().lower() == "live"
        assert entrance.locator(".stale").inner_text() == ""
        hall_row = page.locator('#alerts li[data-camera="hall"]').first
        entrance_row = page.locator('#alerts li[data-camera="entrance"]').first
        hall_row.wait_for()
        entrance_row.wait_for()
        assert re.fullmatch(r"no_mask 0\.\d\d", hall_row.locator(".score").inner_text())
        page.wait_for_function("document.querySelector('#alerts li .thumb').naturalWidth > 0")
        shoot(page, shots / f"{size}-board.png")

        # -- the camera view: the live picture, an ignore mask drawn and saved --------------
        press(page, size, entrance.locator(".frame"))
        page.wait_for_function("location.hash === '#camera/entrance'")
        assert camera_view_open(page)
        assert page.evaluate("document.activeElement.closest('dialog')?.id") == "camera-view"
        page.wait_for_function("document.querySelector('.cv-picture').naturalWidth > 0")
        assert page.locator(".cv-name").inner_text() == "Entrance"
        assert page.locator('.cv-alert-list li[data-camera="entrance"]').count() >= 1
        draw_polygon(page, size, "ignore mask", MASK)
        with page.expect_response(lambda r: r.request.method == "PUT") as saved:
            press(page, size, page.get_by_role("button", name="Save zones"))
        assert saved.value.status == 200
        page.wait_for_function(
            "document.querySelector('.zone-status').textContent.startsWith('Saved')"
        )
        zones = b.api.get("/api/cameras/entrance/zones").json()
        assert zones["source"] == "api" and zones["include"] == []
        assert [z["name"] for z in zones["ignore"]] == ["mask-1"]
        points = zones["ignore"][0]["points"]
        assert len(points) == len(MASK)
        for (x, y), (want_x, want_y) in zip(points, MASK, strict=True):
            assert abs(x - want_x) < TOLERANCE and abs(y - want_y) < TOLERANCE, (points, MASK)
        page.wait_for_timeout(300)  # the next live picture under the mask
        page.screenshot(path=str(shots / f"{size}-camera-view.png"))

        # Back closes the view; opened again, the saved mask is listed (GET); Escape closes.
        page.go_back()
        page.wait_for_function(f"!{VIEW_OPEN}")
        assert page.evaluate("location.hash") == ""
        press(page, size, entrance.locator(".frame"))
        page.wait_for_selector(".zone-list li")
        assert page.locator(".zone-list li input").input_value() == "mask-1"
        page.keyboard.press("Escape")
        page.wait_for_function(f"!{VIEW_OPEN} && location.hash === ''")

        # -- review: acknowledge one alert, mark another a false positive (a poster) -------
        page.locator("#filters input[name=reviewer]").fill(REVIEWER)
        hall_id = hall_row.get_attribute("data-alert")
        entrance_id = entrance_row.get_attribute("data-alert")
        press(page, size, hall_row.get_by_role("button", name="Acknowledge"))
        page.wait_for_selector(alert_row(hall_id, "acknowledged"))
        review = b.api.get(f"/api/alerts/{hall_id}").json()["review"]
        assert review["state"] == "acknowledged" and review["by"] == REVIEWER
        assert REVIEWER in hall_row.locator(".review").inner_text()
        press(page, size, entrance_row.get_by_role("button", name="False positive"))
        press(page, size, page.get_by_role("button", name="Not a person (poster, picture)"))
        page.wait_for_selector(alert_row(entrance_id, "false_positive"))
        review = b.api.get(f"/api/alerts/{entrance_id}").json()["review"]
        assert (review["state"], review["label"]) == ("false_positive", "none")

        # -- filters: by review state, by camera ------------------------------------------
        page.select_option("#filters select[name=state]", "acknowledged")
        page.wait_for_function(
            "[...document.querySelectorAll('#alerts li')].map(li => li.dataset.alert).join() === "
            f"'{hall_id}'"
        )
        page.select_option("#filters select[name=state]", "")
        page.select_option("#filters select[name=camera]", "entrance")
        page.wait_for_function(
            "(() => { const rows = [...document.querySelectorAll('#alerts li')];"
            " return rows.length > 0 && rows.every(li => li.dataset.camera === 'entrance'); })()"
        )
        page.select_option("#filters select[name=camera]", "")
        page.wait_for_selector(alert_row(hall_id))
        page.wait_for_timeout(300)  # thumbnails of the reloaded list
        shoot(page, shots / f"{size}-alerts-reviewed.png")

        # -- the snapshot, large -----------------------------------------------------------
        press(page, size, page.locator(f"{alert_row(hall_id)} .open"))
        page.wait_for_function(
            "document.querySelector('#viewer').open"
            " && document.querySelector('#viewer-img').naturalWidth > 0"
        )
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#viewer').open")

        # -- the stale camera removed (after a confirmation) -------------------------------
        page.once("dialog", lambda dialog: dialog.accept())
        press(page, size, garage.get_by_role("button", name="Remove camera"))
        garage.wait_for(state="detached")
        ids = [c["id"] for c in b.api.get("/api/cameras").json()["cameras"]]
        assert ids == ["door", "entrance", "hall"]

        # -- inference stops: the frozen picture says so within 10 s -----------------------
        b.live.analysed = False
        page.wait_for_selector(
            '.tile[data-camera="entrance"][data-state="not_analysed"]', timeout=10000
        )
        assert entrance.locator(".stale").inner_text().startswith("not analysed since")
        dimmed = entrance.locator(".picture").evaluate("e => getComputedStyle(e).filter")
        assert "grayscale" in dimmed
        shoot(page, shots / f"{size}-not-analysed.png")

        # Pictures were asked for only where there was one; nothing failed anywhere.
        asked = {
            m.group(1) for u in watch.requested if (m := re.search(r"/cameras/(\w+)/latest", u))
        }
        assert asked == {"entrance", "hall"}
        assert watch.problems == []
        assert (
            page.evaluate("document.documentElement.scrollWidth")
            <= VIEWPORTS[size]["viewport"]["width"]
        )
        page.context.close()


def test_refused_writes_say_why(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    browser: Any,
    tmp_path: Path,
) -> None:
    """A kiosk (anonymous reads) cannot review or change zones: the page says a token is
    needed; a signed-in user's invalid zone (a bad name) is refused with the reason."""
    kiosk, signed_in = PageWatch(allowed=("/review",)), PageWatch(allowed=("/hall/zones",))
    with board(
        redis_server, redis_client, sample_jpeg, tmp_path / "state", allow_anonymous_read=True
    ) as b:
        page = new_page(browser, "desktop", kiosk)
        page.goto(f"{b.base}/")
        row = page.locator('#alerts li[data-camera="hall"]').first
        press(page, "desktop", row.get_by_role("button", name="Acknowledge"))
        page.wait_for_selector("#notice:not([hidden])")
        assert "needs the API token" in page.locator("#notice").inner_text()
        hall_id = row.get_attribute("data-alert")
        assert b.api.get(f"/api/alerts/{hall_id}").json()["review"]["state"] == "new"
        assert row.get_attribute("data-review") == "new"
        assert kiosk.problems == []
        page.context.close()

        page = new_page(browser, "desktop", signed_in)
        page.goto(f"{b.base}/?token={TOKEN}#camera/hall")  # signed in, straight to the view
        page.wait_for_function(VIEW_OPEN)
        draw_polygon(page, "desktop", "include zone", MASK)
        page.locator(".zone-list li input").fill("<b>")
        page.get_by_role("button", name="Save zones").click()
        status = page.locator(".zone-status")
        page.wait_for_function(
            "document.querySelector('.zone-status').textContent.startsWith('Rejected')"
        )
        assert "name" in status.inner_text()
        assert b.api.get("/api/cameras/hall/zones").json()["include"] == []
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.keyboard.press("Escape")  # unsaved changes: the page asks first, "no" keeps it
        assert asked == ["Discard the unsaved zone changes?"]
        assert camera_view_open(page)
        assert signed_in.problems == []
        page.context.close()
