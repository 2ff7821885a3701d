"""Zones: point-in-polygon, share of a box inside masks, the verdict per face, the
validation of zone documents (settings and API bodies), and the zone book (configured
zones, API zones stored in SQLite across a reopen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from facemask.core.types import Detections
from facemask.infra.settings import ConfigError
from services.alerts.config import AlertSettings
from services.alerts.store import AlertStore
from services.alerts.zones import (
    IGNORE_MASK,
    KEEP,
    OUTSIDE_ZONE,
    SAMPLE_SIDE,
    CameraZones,
    Polygon,
    ZoneBook,
    ZoneSpec,
    box_samples,
    covered_share,
    points_in_polygon,
)

SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]
TRIANGLE = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]  # below the anti-diagonal x + y = 1
L_SHAPE = [(0.0, 0.0), (0.6, 0.0), (0.6, 0.2), (0.2, 0.2), (0.2, 0.6), (0.0, 0.6)]
BOW_TIE = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]  # self-intersecting


@pytest.mark.parametrize(
    ("polygon", "point", "inside"),
    [
        (SQUARE, (0.4, 0.4), True),
        (SQUARE, (0.1, 0.4), False),
        (SQUARE, (0.7, 0.4), False),
        (SQUARE, (0.4, 0.7), False),
        (TRIANGLE, (0.2, 0.2), True),
        (TRIANGLE, (0.6, 0.6), False),
        (L_SHAPE, (0.1, 0.5), True),  # the long arm
        (L_SHAPE, (0.5, 0.1), True),  # the other arm
        (L_SHAPE, (0.4, 0.4), False),  # the notch of a concave polygon
        (BOW_TIE, (0.2, 0.5), True),  # even-odd: each lobe inside...
        (BOW_TIE, (0.8, 0.5), True),
        (BOW_TIE, (0.5, 0.2), False),  # ...the wedges between them not
    ],
)
def test_point_in_polygon(polygon: list[tuple[float, float]], point: Any, inside: bool) -> None:
    assert points_in_polygon([point], polygon).tolist() == [inside]


def test_point_in_polygon_is_vectorised_and_agrees_point_by_point() -> None:
    rng = np.random.default_rng(7)
    points = rng.random((500, 2))
    together = points_in_polygon(points, L_SHAPE)
    one_by_one = [bool(points_in_polygon(p, L_SHAPE)[0]) for p in points]
    assert together.tolist() == one_by_one
    # The L is the union of two rectangles: the same answer from plain inequalities.
    x, y = points[:, 0], points[:, 1]
    expected = ((x < 0.6) & (y < 0.2)) | ((x < 0.2) & (y < 0.6))
    assert together.tolist() == expected.tolist()


def test_box_samples_are_the_cell_centres_of_a_grid() -> None:
    samples = box_samples([[0.0, 0.0, 1.0, 0.5]], side=2)
    assert samples.tolist() == [[[0.25, 0.125], [0.75, 0.125], [0.25, 0.375], [0.75, 0.375]]]


RIGHT_HALF = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
TOP_LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]


@pytest.mark.parametrize(
    ("box", "polygons", "share", "tolerance"),
    [
        ((0.3, 0.3, 0.5, 0.5), [SQUARE], 1.0, 0.0),  # wholly inside
        ((0.7, 0.7, 0.9, 0.9), [SQUARE], 0.0, 0.0),  # wholly outside
        ((0.4, 0.1, 0.6, 0.3), [RIGHT_HALF], 0.5, 0.0),  # a vertical edge through the middle
        ((0.4, 0.4, 0.6, 0.6), [TOP_LEFT], 0.25, 0.0),  # a corner over a quarter
        ((0.4, 0.4, 0.6, 0.6), [TOP_LEFT, RIGHT_HALF], 0.75, 0.0),  # the union of two masks
        ((0.4, 0.4, 0.6, 0.6), [TOP_LEFT, TOP_LEFT], 0.25, 0.0),  # overlaps count once
        ((0.0, 0.0, 1.0, 1.0), [TRIANGLE], 0.5, 1 / SAMPLE_SIDE),  # a diagonal edge
        ((0.25, 0.25, 0.75, 0.75), [TRIANGLE], 0.5, 1 / SAMPLE_SIDE),
        ((0.6, 0.0, 1.0, 0.4), [TRIANGLE], 0.5, 1 / SAMPLE_SIDE),  # exact: 0.08 / 0.16
        ((0.5, 0.3, 0.9, 0.5), [TRIANGLE], 0.25, 1 / SAMPLE_SIDE),  # exact: 0.02 / 0.08
    ],
)
def test_share_of_a_box_inside_the_masks(
    box: tuple[float, float, float, float],
    polygons: list[list[tuple[float, float]]],
    share: float,
    tolerance: float,
) -> None:
    arrays = tuple(np.asarray(p) for p in polygons)
    got = covered_share([box], arrays)
    assert got.shape == (1,)
    assert abs(float(got[0]) - share) <= tolerance, got


def test_share_is_vectorised_over_boxes() -> None:
    boxes = [(0.3, 0.3, 0.5, 0.5), (0.7, 0.7, 0.9, 0.9), (0.4, 0.1, 0.6, 0.3), (0, 0, 0.1, 0.1)]
    arrays = (np.asarray(SQUARE), np.asarray(RIGHT_HALF))
    # the third: its right half in RIGHT_HALF, a quarter more in SQUARE
    assert covered_share(boxes, arrays).tolist() == [1.0, 1.0, 0.75, 0.0]
    assert covered_share(np.empty((0, 4)), arrays).shape == (0,)


def poly(name: str, points: list[tuple[float, float]]) -> Polygon:
    return Polygon(name=name, points=points)


# Faces of a 100 x 100 frame (pixel boxes), the verdict of each with the zones below.
FACE_IN_SQUARE = (30, 30, 50, 50)  # centre (0.4, 0.4), wholly in SQUARE
FACE_ON_EDGE = (50, 30, 70, 50)  # centre (0.6, 0.4) on SQUARE's edge; half of it inside
FACE_MOSTLY_OUT = (55, 30, 75, 50)  # a quarter of it inside SQUARE, centre outside
FACE_FAR = (80, 80, 95, 95)


@pytest.mark.parametrize(
    ("spec", "verdicts"),
    [
        (ZoneSpec(), [KEEP, KEEP, KEEP, KEEP]),
        # box centre rule (min_overlap 0): the edge counts as outside here
        (ZoneSpec(ignore=[poly("m", SQUARE)]), [IGNORE_MASK, KEEP, KEEP, KEEP]),
        # a share of the box: half of it inside drops it at 0.5, not at 0.6
        (
            ZoneSpec(ignore=[poly("m", SQUARE)], min_overlap=0.5),
            [IGNORE_MASK, IGNORE_MASK, KEEP, KEEP],
        ),
        (ZoneSpec(ignore=[poly("m", SQUARE)], min_overlap=0.6), [IGNORE_MASK, KEEP, KEEP, KEEP]),
        (
            ZoneSpec(ignore=[poly("m", SQUARE)], min_overlap=0.25),
            [IGNORE_MASK, IGNORE_MASK, IGNORE_MASK, KEEP],
        ),
        # include zones: only faces whose centre is inside one are kept
        (ZoneSpec(include=[poly("z", SQUARE)]), [KEEP, OUTSIDE_ZONE, OUTSIDE_ZONE, OUTSIDE_ZONE]),
        (
            ZoneSpec(include=[poly("z", SQUARE), poly("corner", [(0.7, 0.7), (1, 0.7), (1, 1)])]),
            [KEEP, OUTSIDE_ZONE, OUTSIDE_ZONE, KEEP],
        ),
        # both: masked first (a face masked and outside counts as masked)
        (
            ZoneSpec(
                ignore=[poly("m", [(0.7, 0.7), (1, 0.7), (1, 1), (0.7, 1)])],
                include=[poly("z", SQUARE)],
            ),
            [KEEP, OUTSIDE_ZONE, OUTSIDE_ZONE, IGNORE_MASK],
        ),
    ],
)
def test_verdict_per_face(spec: ZoneSpec, verdicts: list[int]) -> None:
    boxes = [FACE_IN_SQUARE, FACE_ON_EDGE, FACE_MOSTLY_OUT, FACE_FAR]
    faces = Detections.from_pixels(boxes, [0.9] * 4, [1] * 4, 100, 100)
    assert CameraZones.of(spec, "config").classify(faces).tolist() == verdicts
    assert CameraZones.of(spec, "config").classify(Detections.empty()).tolist() == []


def square_named(name: str) -> dict[str, Any]:
    return {"name": name, "points": [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"ignore": [{"name": "a", "points": [[0, 0], [1, 0]]}]}, ["at least 3"]),
        ({"ignore": [{"name": "a", "points": [[i / 70, 0.5] for i in range(65)]}]}, ["at most 64"]),
        ({"ignore": [{"name": "a", "points": [[0, 0], [1.1, 0], [1, 1]]}]}, ["less than or equal"]),
        ({"ignore": [{"name": "a", "points": [[0, 0], [1, -0.1], [1, 1]]}]}, ["greater than"]),
        ({"ignore": [{"name": "a", "points": [[0, 0], ["nan", 0], [1, 1]]}]}, ["finite"]),
        ({"ignore": [{"name": "a", "points": [[0, 0], [0.5, 0.5], [1, 1]]}]}, ["no area"]),
        ({"include": [square_named(f"z{i}") for i in range(33)]}, ["at most 32"]),
        ({"ignore": [square_named("")]}, ["bad name"]),
        ({"ignore": [square_named("<script>")]}, ["bad name"]),
        ({"ignore": [square_named("x" * 65)]}, ["bad name"]),
        ({"ignore": [square_named("door"), square_named("door")]}, ["unique", "door"]),
        ({"ignore": [], "min_overlap": 1.5}, ["less than or equal"]),
        ({"ignore": [], "mask": []}, ["mask", "extra"]),
        ({"ignore": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "z": 1}]}, ["extra"]),
    ],
)
def test_invalid_zone_documents(body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        ZoneSpec.model_validate(body)
    text = str(caught.value)
    assert all(word in text for word in words), text


def test_names_are_trimmed_and_may_hold_words() -> None:
    spec = ZoneSpec.model_validate({"ignore": [square_named("  Mona Lisa (print) #2 ")]})
    assert spec.ignore[0].name == "Mona Lisa (print) #2"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"lobby": {"ignore": [{"name": "a", "points": [[0, 0], [1, 0]]}]}}', ["zones[lobby]"]),
        ('{"lobby": {"masks": []}}', ["zones[lobby]", "masks: unknown key"]),
        ('{"bad id!": {}}', ["zones:", "camera id"]),
        ("{not json", ["FACEMASK_ALERTS_ZONES: expected JSON"]),
    ],
)
def test_zones_setting_errors_are_clear(
    monkeypatch: pytest.MonkeyPatch, value: str, words: list[str]
) -> None:
    monkeypatch.setenv("FACEMASK_ALERTS_ZONES", value)
    with pytest.raises(ConfigError) as caught:
        AlertSettings.load(state_dir="unused")
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_zones_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FACEMASK_ALERTS_ZONES",
        '{"lobby": {"ignore": [{"name": "poster", "points": [[0.4, 0.1], [0.6, 0.1], '
        '[0.6, 0.3]]}], "min_overlap": 0.5}}',
    )
    settings = AlertSettings.load(state_dir="unused")
    spec = settings.zones["lobby"]
    assert spec.ignore[0].name == "poster" and spec.min_overlap == 0.5 and spec.include == []


PORTRAIT = ZoneSpec(ignore=[poly("portrait", SQUARE)])
DOOR = ZoneSpec(include=[poly("door", TRIANGLE)], min_overlap=0.3)


def test_zone_book_api_zones_replace_configured_ones_and_survive_a_reopen(
    tmp_path: Path,
) -> None:
    store = AlertStore(tmp_path)
    book = ZoneBook({"lobby": PORTRAIT}, store)
    assert (book.get("lobby").source, book.get("lobby").spec) == ("config", PORTRAIT)
    assert book.get("door").source == "none" and not book.get("door").active
    book.set("door", DOOR)
    book.set("lobby", ZoneSpec())  # cleared through the API: the configured mask is off
    assert not book.get("lobby").active and book.get("lobby").source == "api"
    store.close()

    reopened = AlertStore(tmp_path)
    again = ZoneBook({"lobby": PORTRAIT}, reopened)
    assert (again.get("door").source, again.get("door").spec) == ("api", DOOR)
    assert (again.get("lobby").source, again.get("lobby").active) == ("api", False)
    assert again.forget("lobby") and not again.forget("lobby")
    assert again.get("lobby").source == "config"
    assert set(reopened.load_zones()) == {"door"}
    reopened.close()


def test_unreadable_stored_zones_fall_back_to_the_configured_ones(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.save_zones("lobby", {"ignore": [{"name": "a", "points": [[0, 0]]}]})  # by hand
    book = ZoneBook({"lobby": PORTRAIT}, store)
    assert book.get("lobby").source == "config"
    store.close()
