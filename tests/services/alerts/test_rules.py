"""Rule evaluation and the per-camera engine: who alerts, who never does."""

from __future__ import annotations

import json

import pytest

from facemask.contracts.wire import DetectionsEntry
from facemask.core.types import Detections
from services.alerts.engine import AlertEngine, alert_id_for
from services.alerts.rules import Decision, Rule, counting, evaluate, rule_for, violates
from services.alerts.tracker import Track
from tests.services.alerts.conftest import faces_of

A = (100, 100, 160, 170)
B = (300, 100, 360, 170)
STREAM = "facemask:{p0}:detections"
SIZE = (640, 480)
Face = tuple[str, float, tuple[int, int, int, int]]


def o(label: str, score: float = 0.9, box: tuple[int, int, int, int] = A) -> Face:
    return (label, score, box)


def faces(*rows: Face) -> Detections:
    return faces_of(rows, *SIZE)


def track_of(*rows: Face) -> Track:
    track = Track(1, A, 0.0, 0.0, SIZE)
    for ts, row in enumerate(rows):
        track.observe(faces(row), row[2], SIZE, float(ts))
    return track


@pytest.mark.parametrize(
    ("face", "counted"),
    [
        (o("no_mask", 0.6), True),
        (o("no_mask", 0.59), False),
        (o("mask", 0.99), False),
        (o("no_mask", 0.9, (0, 0, 100, 23)), False),  # 23 px high: too small
        (o("no_mask", 0.9, (0, 0, 24, 24)), True),
    ],
)
def test_counts_needs_label_score_and_size(face: Face, counted: bool) -> None:
    rule = Rule(min_score=0.6, min_face=24)
    assert counting(faces(face), SIZE, rule).tolist() == [counted]


def test_counting_is_vectorised_over_faces() -> None:
    rule = Rule(min_score=0.6, min_face=24)
    rows = [o("no_mask", 0.6), o("mask", 0.99), o("no_mask", 0.9, (0, 0, 100, 23))]
    assert counting(faces(*rows), SIZE, rule).tolist() == [True, False, False]


def test_k_of_n_window() -> None:
    rule = Rule(k=3, n=5)
    assert violates(track_of(*[o("no_mask")] * 3), rule)
    assert not violates(track_of(o("no_mask"), o("mask"), o("no_mask"), o("mask"), o("mask")), rule)
    # Only the last n observations count.
    old = [o("no_mask")] * 3 + [o("mask")] * 3
    assert not violates(track_of(*old), rule)
    assert violates(track_of(*old, o("no_mask"), o("no_mask"), o("no_mask")), rule)


def test_evaluate_decisions() -> None:
    rule = Rule(k=2, n=3, cooldown=10.0)
    track = Track(1, A, 0.0, 0.0, SIZE)
    track.observe(faces(o("no_mask")), A, SIZE, 0.0)
    assert evaluate(track, rule, 0.0) is Decision.NONE  # 1 of 3
    track.observe(faces(o("no_mask")), A, SIZE, 0.2)
    assert evaluate(track, rule, 0.2) is Decision.ALERT  # never alerted: no cooldown
    track.last_alert_ts = -5.0  # its own last alert, 5.2 s ago
    assert evaluate(track, rule, 0.2) is Decision.COOLDOWN
    track.last_alert_ts = -9.8
    assert evaluate(track, rule, 0.2) is Decision.ALERT  # exactly 10 s
    track.alerted = True
    assert evaluate(track, rule, 0.4) is Decision.ALREADY
    track.observe(faces(o("mask")), A, SIZE, 0.6)  # the current face does not count
    assert evaluate(track, rule, 0.6) is Decision.NONE


def test_rule_overrides_per_camera() -> None:
    default = Rule()
    overrides = {"lobby": {"k": 3, "n": 5, "min_face": None}}
    assert rule_for("lobby", default, overrides) == Rule(k=3, n=5)
    grouped = rule_for("door", default, {"door": {"group_window": 2.0, "cooldown": 60.0}})
    assert (grouped.group_window, grouped.cooldown) == (2.0, 60.0)
    assert grouped.to_dict() == {
        "k": 5,
        "n": 8,
        "min_score": 0.6,
        "min_face": 24,
        "cooldown": 60.0,
        "group_window": 2.0,
    }
    assert rule_for("door", default, overrides) is default


# -- the engine ---------------------------------------------------------------------------


class Camera:
    """Feeds one camera's entries to an engine at 5 fps."""

    def __init__(self, engine: AlertEngine, camera_id: str = "lobby") -> None:
        self.engine = engine
        self.camera_id = camera_id
        self.frame = 1000
        self.ts = 1_700_000_000.0

    def step(self, *faces: tuple[str, float, tuple[int, int, int, int]]) -> list[str]:
        entry = DetectionsEntry(
            camera_id=self.camera_id,
            frame_id=self.frame,
            frame_sid=f"{self.frame}-0",
            capture_ts=self.ts,
            done_ts=self.ts,
            width=640,
            height=480,
            model="m",
            detections=faces_of(faces, 640, 480),
        )
        self.frame += 1
        self.ts += 0.2
        outcome = self.engine.process(STREAM, f"{self.frame}-0", entry)
        return [a.alert_id for a in outcome.alerts]

    def run(self, frames: int, *faces: tuple[str, float, tuple[int, int, int, int]]) -> list[str]:
        out: list[str] = []
        for _ in range(frames):
            out.extend(self.step(*faces))
        return out


def engine(**rule: float) -> AlertEngine:
    return AlertEngine(Rule(**rule))  # type: ignore[arg-type]


def test_masked_person_never_alerts() -> None:
    cam = Camera(engine(k=5, n=8))
    assert cam.run(200, ("mask", 0.99, A), ("mask", 0.7, B)) == []


def test_unmasked_person_alerts_once_at_the_kth_frame() -> None:
    cam = Camera(engine(k=5, n=8, cooldown=0.0))
    assert cam.run(4, ("no_mask", 0.9, A)) == []
    alerts = cam.step(("no_mask", 0.9, A))
    assert len(alerts) == 1
    # Same person, still unmasked for a long time: no second alert (one per track).
    assert cam.run(100, ("no_mask", 0.9, A)) == []


def test_person_taking_the_mask_off_alerts() -> None:
    cam = Camera(engine(k=5, n=8, cooldown=0.0))
    assert cam.run(30, ("mask", 0.9, A)) == []
    assert cam.run(4, ("no_mask", 0.9, A)) == []
    assert len(cam.step(("no_mask", 0.9, A))) == 1


def test_mask_back_on_rearms_the_track() -> None:
    cam = Camera(engine(k=3, n=5, cooldown=0.0))
    assert len(cam.run(5, ("no_mask", 0.9, A))) == 1
    assert cam.run(2, ("mask", 0.9, A)) == []  # 2 masked of 5: not re-armed yet
    assert cam.run(3, ("no_mask", 0.9, A)) == []
    assert cam.run(5, ("mask", 0.9, A)) == []  # clearly masked again: re-armed
    assert len(cam.run(3, ("no_mask", 0.9, A))) == 1


def test_flicker_below_k_of_n_never_alerts() -> None:
    cam = Camera(engine(k=5, n=8))
    pattern = [("no_mask" if i % 3 == 0 else "mask") for i in range(300)]  # 3 of 8 at most
    out = []
    for label in pattern:
        out.extend(cam.step((label, 0.9, A)))
    assert out == []


def test_small_faces_and_low_scores_do_not_count() -> None:
    small = (100, 100, 120, 118)  # 18 px
    cam = Camera(engine(k=3, n=5, min_face=24, min_score=0.6))
    assert cam.run(50, ("no_mask", 0.99, small)) == []
    assert cam.run(50, ("no_mask", 0.55, A)) == []


def test_one_persons_alert_never_holds_another_back() -> None:
    cam = Camera(engine(k=2, n=3, cooldown=30.0))
    first = cam.run(2, ("no_mask", 0.9, A), ("mask", 0.9, B))
    assert len(first) == 1
    # B takes the mask off 0.4 s later: B's own alert, at once.
    assert cam.run(1, ("no_mask", 0.9, A), ("no_mask", 0.9, B)) == []
    assert len(cam.step(("no_mask", 0.9, A), ("no_mask", 0.9, B))) == 1
    # Both stay unmasked: one alert per person and violation, no more.
    assert cam.run(20, ("no_mask", 0.9, A), ("no_mask", 0.9, B)) == []


def test_cameras_are_independent() -> None:
    eng = engine(k=2, n=3, cooldown=60.0)
    lobby, door = Camera(eng, "lobby"), Camera(eng, "door")
    assert len(lobby.run(2, ("no_mask", 0.9, A))) == 1
    assert len(door.run(2, ("no_mask", 0.9, A))) == 1


def test_duplicate_frames_are_dropped() -> None:
    eng = engine(k=3, n=5)
    cam = Camera(eng)
    cam.step(("no_mask", 0.9, A))
    cam.step(("no_mask", 0.9, A))
    # The same two frames delivered again (e.g. published twice): no third vote.
    cam.frame -= 2
    cam.ts -= 0.4
    assert cam.step(("no_mask", 0.9, A)) == []
    cam.step(("no_mask", 0.9, A))
    summary = eng.summaries(cam.ts)["lobby"]
    assert summary.frames == 2
    assert cam.step(("no_mask", 0.9, A)) != []  # the real third frame


def test_restored_state_gives_the_same_alerts() -> None:
    """Processing from a restored state is deterministic: same alerts, same ids."""
    first = engine(k=4, n=6, cooldown=0.0)
    cam = Camera(first)
    cam.run(3, ("no_mask", 0.9, A), ("mask", 0.9, B))
    saved = json.loads(json.dumps(list(first.take_dirty().values())))
    frame, ts = cam.frame, cam.ts
    alerts_a = cam.run(5, ("no_mask", 0.9, A), ("mask", 0.9, B))

    second = engine(k=4, n=6, cooldown=0.0)
    second.restore(saved)
    replay = Camera(second)
    replay.frame, replay.ts = frame, ts
    alerts_b = replay.run(5, ("no_mask", 0.9, A), ("mask", 0.9, B))
    assert alerts_a == alerts_b and len(alerts_a) == 1
    assert alerts_a[0] == alert_id_for("lobby", f"{frame}-0", 1)


def test_compliance_counts_faces_over_the_window() -> None:
    eng = AlertEngine(Rule(min_score=0.6), compliance_window=10.0)
    cam = Camera(eng)
    cam.run(25, ("mask", 0.9, A), ("no_mask", 0.9, B))  # 5 s: half masked
    cam.run(25, ("mask", 0.9, A), ("mask", 0.9, B))  # 5 s: all masked
    now = cam.ts
    s = eng.summaries(now)["lobby"]
    assert s.faces == 100 and s.masked == 75 and s.compliance == 0.75
    # Low scores are not counted; 20 s later the window is empty.
    cam.run(5, ("no_mask", 0.3, A))
    later = eng.summaries(cam.ts)["lobby"]
    # Per-second buckets: the first second (10 faces, 5 masked) left the window.
    assert (later.faces, later.masked) == (90, 70)
    assert eng.summaries(now + 20)["lobby"].compliance is None
