"""The engine, per camera and without I/O: the K-of-N rule over tracks, the cooldown per
track, the grouping window, re-arming, re-entry, zones, duplicates, skipped frames,
restart from the serialised state (also one stored by an earlier build), compliance.

Time is the frames' capture time (``T0`` + frame / fps), never the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from facemask.contracts.wire import DetectionsEntry
from services.alerts.engine import AlertEngine, NewAlert, alert_id_for
from services.alerts.rules import Rule
from services.alerts.tracker import TrackerConfig
from services.alerts.zones import Polygon, ZoneBook, ZoneSpec
from tests.services.alerts.conftest import faces_of

T0 = 1_700_000_000.0
STREAM = "facemask:{p0}:detections"
A = (40, 40, 110, 120)  # 70 x 80 px
B = (180, 50, 250, 130)
C = (320, 60, 390, 140)
TINY = (300, 40, 315, 55)  # 15 px: below min_face

Face = tuple[str, float, tuple[int, int, int, int]]

# One letter per frame of one person at box A: N bare, M masked, n bare with a low score,
# t bare but a tiny face (its own box), "." nobody in the frame.
LETTERS: dict[str, list[Face]] = {
    "N": [("no_mask", 0.9, A)],
    "M": [("mask", 0.9, A)],
    "n": [("no_mask", 0.5, A)],
    "t": [("no_mask", 0.9, TINY)],
    ".": [],
}


def entry(
    camera: str, frame: int, faces: list[Face], *, fps: float = 4.0, status: str = "ok"
) -> DetectionsEntry:
    ts = T0 + frame / fps
    return DetectionsEntry(
        camera_id=camera,
        frame_id=frame,
        frame_sid=f"{int(ts * 1000)}-{frame}",
        capture_ts=ts,
        done_ts=ts + 0.05,
        width=464,
        height=330,
        model="test",
        status=status,
        detections=faces_of(faces, 464, 330),
    )


@dataclass
class Run:
    """What a sequence of frames did."""

    alerts: list[tuple[int, NewAlert]] = field(default_factory=list)
    suppressed: dict[int, int] = field(default_factory=dict)
    duplicates: list[int] = field(default_factory=list)


def feed(
    engine: AlertEngine, camera: str, frames: list[list[Face]], *, first: int = 0, **kw: float
) -> Run:
    run = Run()
    for offset, faces in enumerate(frames):
        frame = first + offset
        outcome = engine.process(STREAM, f"{frame + 1}-0", entry(camera, frame, faces, **kw))
        run.alerts.extend((frame, alert) for alert in outcome.alerts)
        if outcome.suppressed:
            run.suppressed[frame] = outcome.suppressed
        if outcome.duplicate:
            run.duplicates.append(frame)
    return run


def letters(text: str) -> list[list[Face]]:
    return [LETTERS[c] for c in text]


K3_OF_4 = Rule(k=3, n=4, min_score=0.6, min_face=24, cooldown=0.0)


@pytest.mark.parametrize(
    ("frames", "alert_frames"),
    [
        ("MMMMMMMM", []),  # masked: never
        ("NN", []),  # 2 of 4: not yet
        ("NNN", [2]),  # the 3rd unmasked frame
        ("NNMN", [3]),  # 3 of the last 4, and the current face is bare
        ("NNNM", [2]),
        ("NMNMNMNMNM", []),  # flicker: at most 2 of any 4
        ("NNNNNNNNNN", [2]),  # one alert per track, not per frame
        ("NNNMMMMNNN", [2, 9]),  # masked again (3 of 4) re-arms the track
        ("NNNMMNNNNN", [2]),  # 2 masked of 4 do not re-arm it
        ("NN.N", [3]),  # a frame without the face does not break the track
        ("nnnnnn", []),  # score below min_score
        ("tttttt", []),  # face smaller than min_face
        ("NnN", []),  # the low-score frame does not count: 2 of 3
        ("NnNN", [3]),
    ],
)
def test_k_of_n_rule_per_track(frames: str, alert_frames: list[int]) -> None:
    engine = AlertEngine(K3_OF_4)
    run = feed(engine, "lobby", letters(frames))
    assert [frame for frame, _ in run.alerts] == alert_frames


def test_an_alert_names_its_frame_track_box_and_best_score() -> None:
    engine = AlertEngine(K3_OF_4)
    frames = [[("no_mask", s, A), ("mask", 0.99, B)] for s in (0.7, 0.95, 0.8)]
    ((frame, alert),) = feed(engine, "lobby", frames).alerts
    sent = entry("lobby", frame, frames[frame])
    assert alert.alert_id == alert_id_for("lobby", sent.frame_sid, alert.track_id)
    assert (alert.camera_id, alert.ts, alert.frame_id, alert.frame_sid, alert.stream) == (
        "lobby",
        sent.capture_ts,
        2,
        sent.frame_sid,
        STREAM,
    )
    assert alert.track_id == 1 and alert.box == A and alert.score == 0.95
    assert (alert.width, alert.height) == (464, 330) and alert.rule == K3_OF_4
    assert len(alert.detections) == 2


def people(*rows: str) -> list[list[Face]]:
    """Frames of several people, one letter row each (``LETTERS``; person i at box i)."""
    boxes = [A, B, C]
    return [
        [(LETTERS[c][0][0], LETTERS[c][0][1], boxes[i]) for i, c in enumerate(col) if c != "."]
        for col in zip(*rows, strict=True)
    ]


@pytest.mark.parametrize(
    ("rows", "cooldown", "alerts", "suppressed"),
    [
        # Three people unmasked at once: three alerts, nobody held back by another's.
        (("NNNN", "NNNN", "NNNN"), 60.0, [(1, 1), (1, 2), (1, 3)], {}),
        # B takes the mask off later: alerts at once, whatever A's alert was.
        (("NNNNNNNN", "MMMMNNNN"), 60.0, [(1, 1), (5, 2)], {}),
        # A re-armed (masked 2 of 3) and bare again 1.25 s after its alert: held back by
        # its own 2 s cooldown, counted per frame, and alerts when it ends (frame 9).
        (("NNMMNNNNNNNN",), 2.0, [(1, 1), (9, 1)], {5: 1, 6: 1, 7: 1, 8: 1}),
        # ... but not if it masks up before its cooldown ends.
        (("NNMMNNNMMMMM",), 2.0, [(1, 1)], {5: 1, 6: 1}),
        # Cooldown 0: every new violation of a re-armed track alerts.
        (("NNMMNNMMNN",), 0.0, [(1, 1), (5, 1), (9, 1)], {}),
    ],
)
def test_every_person_alerts_and_the_cooldown_is_per_track(
    rows: tuple[str, ...], cooldown: float, alerts: list[tuple[int, int]], suppressed: dict
) -> None:
    engine = AlertEngine(Rule(k=2, n=3, min_score=0.6, min_face=24, cooldown=cooldown))
    run = feed(engine, "lobby", people(*rows), fps=4.0)  # 0.25 s per frame
    assert [(frame, alert.track_id) for frame, alert in run.alerts] == alerts
    assert all(a.violators == 1 and a.track_ids == (a.track_id,) for _f, a in run.alerts)
    assert run.suppressed == suppressed
    summary = engine.summaries(T0 + 10.0)["lobby"]
    assert summary.last_alert_ts == T0 + alerts[-1][0] * 0.25


def test_cameras_are_independent() -> None:
    engine = AlertEngine(Rule(k=2, n=3, cooldown=60.0))
    lobby = feed(engine, "lobby", letters("NNN"))
    door = feed(engine, "door", letters("NNN"))
    assert [f for f, _ in lobby.alerts] == [1] and [f for f, _ in door.alerts] == [1]


GROUPED = Rule(k=2, n=3, min_score=0.6, min_face=24, cooldown=0.0, group_window=1.0)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # Three at once: one alert at the window's end (frame 5 = 1.0 s after frame 1),
        # showing the frame it opened at, naming all three.
        (("NNNNNNNN", "NNNNNNNN", "NNNNNNNN"), [(5, 1, 1, (1, 2, 3))]),
        # C violates 0.75 s after A: still in the window, still one alert.
        (("NNNNNNNN", "NNNNNNNN", "MMMNNNNN"), [(5, 1, 1, (1, 2, 3))]),
        # C violates 1.0 s after A (frame 5, as the first window closes): a second
        # window, a second alert: nobody dropped.
        (("NNNNNNNNNNNN", "MMMMMMMMMMMM", "MMMMNNNNNNNN"), [(5, 1, 1, (1,)), (9, 5, 3, (3,))]),
        # A violator who masks up within the window is still named.
        (("NNMMMMMM", "NNNNNNNN"), [(5, 1, 1, (1, 2))]),
    ],
)
def test_the_grouping_window_merges_violators_into_one_alert(
    rows: tuple[str, ...], expected: list[tuple[int, int, int, tuple[int, ...]]]
) -> None:
    engine = AlertEngine(GROUPED)
    run = feed(engine, "lobby", people(*rows), fps=4.0)
    got = [(f, a.frame_id, a.track_id, a.track_ids) for f, a in run.alerts]
    assert got == expected
    for _frame, alert in run.alerts:
        opened = entry("lobby", alert.frame_id, people(*rows)[alert.frame_id])
        assert alert.violators == len(alert.track_ids)
        assert (alert.ts, alert.frame_sid) == (opened.capture_ts, opened.frame_sid)
        assert alert.box == {1: A, 2: B, 3: C}[alert.track_id]
        assert len(alert.detections) == len(opened.detections)
        assert alert.alert_id == alert_id_for("lobby", opened.frame_sid, alert.track_id)


def test_a_pending_group_survives_a_restart_and_closes_on_any_entry() -> None:
    frames = people("NNNN", "NNNN")
    before = AlertEngine(GROUPED)
    assert feed(before, "lobby", frames).alerts == []  # window open since frame 1
    stored = json.loads(json.dumps(before.take_dirty()))
    assert stored["lobby"]["group"]["members"][0][0] == 1
    after = AlertEngine(GROUPED)
    after.restore(stored.values())
    # A skipped frame 1.0 s after the window opened closes it: the alert is not held
    # back until the model runs again.
    closing = after.process(STREAM, "99-0", entry("lobby", 5, [], fps=4.0, status="skipped"))
    (alert,) = closing.alerts
    assert (alert.frame_id, alert.track_ids, alert.violators) == (1, (1, 2), 2)
    assert after.take_dirty()["lobby"]["group"] is None


@pytest.mark.parametrize(
    ("gap_s", "alerts"),
    [
        (2.0, [0]),  # gone 2 s (a dropout, someone walking past): the same track resumes
        (5.0, [0]),  # exactly the re-entry time: still the same person
        (5.5, [0, 1]),  # longer: a new person track, a new alert
    ],
)
def test_a_person_back_after_the_reentry_time_is_a_new_track(
    gap_s: float, alerts: list[int]
) -> None:
    engine = AlertEngine(Rule(k=2, n=3, cooldown=0.0), tracker=TrackerConfig(reentry=5.0))
    first = feed(engine, "lobby", letters("NN"), fps=4.0)  # alert at frame 1 (0.25 s)
    back = int((0.25 + gap_s) * 4)
    again = feed(engine, "lobby", letters("NNNN"), first=back, fps=4.0)
    tracks = {a.track_id for _f, a in first.alerts + again.alerts}
    assert [a.track_id - 1 for _f, a in first.alerts + again.alerts] == alerts
    assert len(tracks) == len(alerts)


def test_zones_drop_faces_before_tracking_and_compliance() -> None:
    poster = Polygon(name="poster", points=[(0.0, 0.0), (0.3, 0.0), (0.3, 0.5), (0.0, 0.5)])
    book = ZoneBook({"lobby": ZoneSpec(ignore=[poster])})
    engine = AlertEngine(Rule(k=2, n=3, cooldown=0.0), zones=book, compliance_window=10.0)
    # A (centre 0.16, 0.24) is under the mask; B (0.47, 0.27) is not.
    frames = [[("no_mask", 0.9, A), ("mask", 0.9, B)]] * 5
    run = Run()
    for frame, faces in enumerate(frames):
        outcome = engine.process(STREAM, f"{frame + 1}-0", entry("lobby", frame, faces))
        run.alerts.extend((frame, alert) for alert in outcome.alerts)
        assert outcome.ignored == {"ignore_mask": 1}
        assert outcome.faces == ["no_mask", "mask"]  # every face the model found
    assert run.alerts == []
    summary = engine.summaries(T0 + 1.0)["lobby"]
    assert (summary.faces, summary.masked, summary.tracks) == (5, 5, 1)
    latest = engine.latest("lobby")
    assert latest is not None and len(latest["dets"]) == 2 and latest["ignored"] == [0]
    # The same camera without zones (set through the API: effective for the next entry).
    book.set("lobby", ZoneSpec())
    assert [f for f, _a in feed(engine, "lobby", frames, first=5).alerts] == [6]
    assert engine.latest("lobby")["ignored"] == []  # type: ignore[index]


def test_duplicate_frames_are_dropped_without_votes() -> None:
    engine = AlertEngine(K3_OF_4)
    first = feed(engine, "lobby", letters("NN"))
    again = feed(engine, "lobby", letters("NN"))  # the same frame ids once more
    assert again.duplicates == [0, 1] and not first.alerts and not again.alerts
    assert engine.summaries(T0 + 1)["lobby"].frames == 2
    assert [f for f, _ in feed(engine, "lobby", letters("N"), first=2).alerts] == [2]


def test_skipped_frames_are_no_evidence_either_way() -> None:
    engine = AlertEngine(Rule(k=2, n=3, cooldown=0.0))
    feed(engine, "lobby", letters("N"))
    skipped = engine.process(STREAM, "9-0", entry("lobby", 1, [], status="skipped"))
    assert not skipped.alerts and not skipped.duplicate
    assert engine.latest("lobby")["status"] == "skipped"  # type: ignore[index]
    # Frame 2 is the track's 2nd observation: the skipped frame neither voted nor missed.
    assert [f for f, _ in feed(engine, "lobby", letters("N"), first=2).alerts] == [2]


def test_per_camera_overrides() -> None:
    engine = AlertEngine(K3_OF_4, {"door": {"k": 1, "n": 1, "min_face": None}})
    assert engine.rule("door") == Rule(k=1, n=1, min_score=0.6, min_face=24, cooldown=0.0)
    assert engine.rule("lobby") is K3_OF_4
    assert [f for f, _ in feed(engine, "door", letters("N")).alerts] == [0]
    assert feed(engine, "lobby", letters("N")).alerts == []


def test_restart_from_the_stored_state_gives_the_same_alerts() -> None:
    frames = letters("NNMNNNMMMMNNNN")
    whole = feed(AlertEngine(K3_OF_4), "lobby", frames)

    before = AlertEngine(K3_OF_4)
    first = feed(before, "lobby", frames[:5])
    stored = json.loads(json.dumps(before.take_dirty()))  # as the database keeps it
    after = AlertEngine(K3_OF_4)
    after.restore(stored.values())
    rest = feed(after, "lobby", frames[5:], first=5)
    assert first.alerts + rest.alerts == whole.alerts
    assert len(whole.alerts) == 2
    # Frames processed before the restart are recognised as duplicates after it.
    assert feed(after, "lobby", frames[3:5], first=3).duplicates == [3, 4]


def test_take_dirty_returns_the_cameras_touched_since_the_last_call() -> None:
    engine = AlertEngine(K3_OF_4)
    feed(engine, "lobby", letters("M"))
    feed(engine, "door", letters("M"))
    assert sorted(engine.take_dirty()) == ["door", "lobby"]
    assert engine.take_dirty() == {}
    feed(engine, "lobby", letters("M"), first=1)
    feed(engine, "door", letters("M"))  # a duplicate changes nothing
    assert list(engine.take_dirty()) == ["lobby"]
    assert engine.camera_ids() == ["door", "lobby"]


def test_compliance_and_fps_over_the_window() -> None:
    engine = AlertEngine(Rule(k=5, n=8), compliance_window=10.0)
    faces: list[Face] = [("mask", 0.9, A), ("no_mask", 0.9, B), ("no_mask", 0.4, TINY)]
    feed(engine, "lobby", [faces] * 20, fps=5.0)  # 4 s of frames
    last = T0 + 19 / 5.0
    summary = engine.summaries(last)["lobby"]
    # The low-score tiny face is not counted: 20 masked of 40 counted faces.
    assert (summary.masked, summary.faces, summary.compliance) == (20, 40, 0.5)
    assert summary.fps == pytest.approx(5.0) and summary.frames == 20
    assert summary.tracks == 3 and summary.last_ts == last
    gone = engine.summaries(last + 12.0)["lobby"]  # the window has moved past them
    assert (gone.faces, gone.compliance, gone.fps) == (0, None, 0.0)


def test_a_state_stored_by_the_previous_build_still_loads() -> None:
    """Before tracks had their own cooldown the camera kept one ``last_alert_ts`` and
    there was no pending group: an alerted track takes the camera's last alert time."""
    old = {
        "camera_id": "lobby",
        "tracker": {
            "next_id": 2,
            "tracks": [
                {
                    "id": 1,
                    "box": list(A),
                    "size": [464, 330],
                    "first_ts": T0,
                    "last_ts": T0 + 0.25,
                    "missed": 0,
                    "hits": 2,
                    "alerted": True,
                    "history": [["no_mask", 0.9, *A], ["no_mask", 0.9, *A]],
                }
            ],
        },
        "last_alert_ts": T0 + 0.25,
        "recent": [0, 1],
        "buckets": {str(int(T0)): [0, 2]},
        "latest": None,
        "last_ts": T0 + 0.25,
        "last_done_ts": T0 + 0.3,
        "frames": 2,
    }
    engine = AlertEngine(Rule(k=2, n=3, cooldown=2.0))
    engine.restore([old])
    # Masked (re-armed), bare again 1.25 s after the stored alert: its cooldown holds it
    # back until 2 s after that alert (frame 9), then it alerts.
    run = feed(engine, "lobby", letters("MMNNNNNNNN"), first=2, fps=4.0)
    assert [(f, a.track_id) for f, a in run.alerts] == [(9, 1)]
    assert run.suppressed == {5: 1, 6: 1, 7: 1, 8: 1}
    assert engine.take_dirty()["lobby"]["tracker"]["tracks"][0]["last_alert_ts"] == T0 + 9 / 4
