"""The engine, per camera and without I/O: the K-of-N rule over tracks, cooldown,
re-arming, duplicates, skipped frames, restart from the serialised state, compliance.

Time is the frames' capture time (``T0`` + frame / fps), never the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from facemask.contracts.wire import DetectionsEntry
from services.alerts.engine import AlertEngine, NewAlert, alert_id_for
from services.alerts.rules import Rule
from tests.services.alerts.conftest import faces_of

T0 = 1_700_000_000.0
STREAM = "facemask:{p0}:detections"
A = (40, 40, 110, 120)  # 70 x 80 px
B = (180, 50, 250, 130)
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


def test_cooldown_holds_the_next_track_back_by_capture_time() -> None:
    rule = Rule(k=2, n=3, min_score=0.6, min_face=24, cooldown=2.0)
    engine = AlertEngine(rule)
    both = [("no_mask", 0.9, A), ("no_mask", 0.9, B)]
    run = feed(engine, "lobby", [both] * 12, fps=4.0)  # 0.25 s per frame
    assert [(frame, alert.track_id) for frame, alert in run.alerts] == [(1, 1), (9, 2)]
    # Track 2 violated from frame 1 on: held back for 2 s (8 frames), counted each time.
    assert run.suppressed == dict.fromkeys(range(1, 9), 1)
    summary = engine.summaries(T0 + 3.0)["lobby"]
    assert summary.last_alert_ts == T0 + 9 * 0.25


def test_the_cooldown_is_per_camera() -> None:
    engine = AlertEngine(Rule(k=2, n=3, cooldown=60.0))
    lobby = feed(engine, "lobby", letters("NNN"))
    door = feed(engine, "door", letters("NNN"))
    assert [f for f, _ in lobby.alerts] == [1] and [f for f, _ in door.alerts] == [1]


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
