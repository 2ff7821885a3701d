"""What the service knows of each camera: the registry cache (an injected clock), names
kept for offline cameras, one camera's state from registry + arrivals (a table with an
injected "now"), and its status document."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from services.alerts.cameras import (
    Arrival,
    CameraDirectory,
    CameraHealth,
    HealthRules,
    camera_health,
    camera_status,
)
from services.alerts.engine import CameraSummary
from services.alerts.store import AlertStore

LAYOUT = StreamLayout()
NOW = 1_714_564_800.0


class FakeRegistryRedis:
    """The commands ``read_cameras`` sends (SMEMBERS, pipelined HGETALLs), over a dict of
    camera hashes."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.members: set[str] = set()
        self.reads = 0
        self.down = False

    def smembers(self, _key: str) -> set[bytes]:
        if self.down:
            raise redis.ConnectionError("down")
        self.reads += 1
        return {m.encode() for m in self.members}

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        camera_id = key.rsplit(":", 1)[-1]
        raw = self.hashes.get(camera_id, {})
        return {k.encode(): v.encode() for k, v in raw.items()}

    def pipeline(self, transaction: bool = True) -> FakeRegistryRedis._Pipeline:
        return self._Pipeline(self)

    class _Pipeline:
        """Queues ``hgetall`` calls; ``execute`` answers them in order."""

        def __init__(self, client: FakeRegistryRedis) -> None:
            self.client, self.keys = client, []  # type: list[str]

        def hgetall(self, key: str) -> None:
            self.keys.append(key)

        def execute(self) -> list[dict[bytes, bytes]]:
            return [self.client.hgetall(key) for key in self.keys]

    def register(self, camera_id: str, **fields: str) -> None:
        self.members.add(camera_id)
        self.hashes[camera_id] = {"id": camera_id, **fields}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def directory(tmp_path: Path) -> tuple[CameraDirectory, FakeRegistryRedis, Clock, AlertStore]:
    client, clock, store = FakeRegistryRedis(), Clock(), AlertStore(tmp_path)
    found = CameraDirectory(client, LAYOUT, store, ttl=1.0, clock=clock)  # type: ignore[arg-type]
    return found, client, clock, store


def test_the_registry_is_read_at_most_once_per_ttl(tmp_path: Path) -> None:
    cameras, client, clock, _store = directory(tmp_path)
    client.register("lobby", name="Lobby")
    assert [c["name"] for c in cameras.all()] == ["Lobby"] and client.reads == 1
    clock.now += 0.999
    client.register("door", name="Door")
    assert len(cameras.all()) == 1 and client.reads == 1  # cached
    clock.now += 0.001
    assert [c["id"] for c in cameras.all()] == ["door", "lobby"] and client.reads == 2
    client.down = True  # Redis unreachable: the last list
    clock.now += 5
    assert [c["id"] for c in cameras.all()] == ["door", "lobby"]


def test_an_offline_camera_keeps_its_name_across_restarts(tmp_path: Path) -> None:
    cameras, client, clock, store = directory(tmp_path)
    client.register("lobby", name="Lobby", location="Main hall", last_seen="123.5", status="up")
    assert cameras.info("lobby")["online"] == "1"
    del client.hashes["lobby"]  # the node stopped heart-beating: the hash expired
    clock.now += 2
    offline = cameras.info("lobby")
    assert (offline["online"], offline["name"], offline["location"]) == ("0", "Lobby", "Main hall")
    assert offline["last_seen"] == "123.5"
    # A new process knows the name and when it was last seen from the database.
    restarted = CameraDirectory(client, LAYOUT, store, clock=clock)  # type: ignore[arg-type]
    again = restarted.info("lobby")
    assert (again["name"], again["online"], again["last_seen"]) == ("Lobby", "0", "123.5")
    assert restarted.info("never") == {}


def summary(**kw: Any) -> CameraSummary:
    values: dict[str, Any] = {
        "camera_id": "lobby",
        "last_ts": NOW - 2,
        "last_done_ts": NOW - 1.9,
        "fps": 4.987,
        "masked": 3,
        "faces": 4,
        "frames": 10,
        "last_alert_ts": NOW - 60,
        "tracks": 2,
    }
    return CameraSummary(**{**values, **kw})


RULES = HealthRules(analysis_timeout=5.0, frame_timeout=10.0, online_window=15.0)
BEATING = {  # a registered camera whose node heart-beats and publishes frames
    "id": "lobby",
    "online": "1",
    "status": "up",
    "fps": "5",
    "last_seen": str(NOW - 1),
    "last_frame_ts": str(NOW - 1.2),
    "frames_published": "120",
}


def beating(**fields: str) -> dict[str, str]:
    return {**BEATING, **fields}


def arrived(entry: float, analysed: float | None = None, skipped: str = "") -> Arrival:
    return Arrival(NOW - entry, None if analysed is None else NOW - analysed, skipped)


# (registry, arrival, summary, expect_since: seconds before NOW) -> (state, reason, since)
HEALTH_CASES: list[tuple[str, Any, Any, Any, float, tuple[str, str, float | None]]] = [
    (
        "frames arrive, detections follow",
        beating(),
        arrived(0.5, 0.5),
        None,
        100,
        ("live", "frames arrive and detections follow", None),
    ),
    (
        "detections stopped 6 s ago (inference down)",
        beating(),
        arrived(6, 6),
        None,
        100,
        ("not_analysed", "no detections for 6 s while frames arrive", NOW - 6),
    ),
    ("exactly the timeout: still live", beating(), arrived(5, 5), None, 100, ("live", ANY, None)),
    (
        "entries arrive but every frame is skipped as too old",
        beating(),
        arrived(0.3, 8, "too_old"),
        None,
        100,
        ("not_analysed", "inference skips every frame (too_old) for 8 s", NOW - 8),
    ),
    (
        "no entry since the service started 7 s ago",
        beating(),
        None,
        None,
        7,
        ("not_analysed", "no detections for 7 s while frames arrive", NOW - 7),
    ),
    ("no entry yet, started 3 s ago: grace", beating(), None, None, 3, ("live", ANY, None)),
    (
        "restored capture times do not count: wall-clock arrivals only",
        beating(),
        None,
        summary(last_ts=NOW - 0.1),
        60,
        ("not_analysed", ANY, NOW - 60),
    ),
    (
        "a 0.1 fps camera gets three frame intervals",
        beating(fps="0.1", last_frame_ts=str(NOW - 21)),
        arrived(20, 20),
        None,
        100,
        ("live", ANY, None),
    ),
    (
        "source failing: the node's last error",
        beating(status="reconnecting", last_error="rtsp://cam: connection refused"),
        arrived(30, 30),
        None,
        100,
        ("no_frames", "rtsp://cam: connection refused", None),
    ),
    (
        "source opening",
        beating(status="starting", last_frame_ts=""),
        None,
        None,
        100,
        ("no_frames", "connecting to the source", None),
    ),
    (
        "file without loop ended",
        beating(status="ended"),
        None,
        None,
        100,
        ("no_frames", "the source ended (a file without loop)", None),
    ),
    (
        "up, nothing published yet",
        beating(last_frame_ts=""),
        None,
        None,
        100,
        ("no_frames", "waiting for the first frame", None),
    ),
    (
        "up, last frame 12 s before the heartbeat (node clock)",
        beating(last_seen=str(NOW - 1), last_frame_ts=str(NOW - 13)),
        arrived(13, 13),
        None,
        100,
        ("no_frames", "no frame published for 12 s", None),
    ),
    (
        "up, no frame since: the last error told too",
        beating(last_frame_ts=str(NOW - 40), last_error="read timeout"),
        None,
        None,
        100,
        ("no_frames", "no frame published for 39 s (last error: read timeout)", None),
    ),
    (
        "node clock 1 h ahead: only its own difference counts",
        beating(last_seen=str(NOW + 3600), last_frame_ts=str(NOW + 3599.5)),
        arrived(0.2, 0.2),
        None,
        100,
        ("live", ANY, None),
    ),
    (
        "an old node (no last_frame_ts) before its first frame",
        {k: v for k, v in beating(frames_published="0").items() if k != "last_frame_ts"},
        None,
        None,
        100,
        ("no_frames", "waiting for the first frame", None),
    ),
    (
        "an old node (status only): judged by its detections",
        {"id": "lobby", "online": "1", "status": "up", "last_seen": str(NOW - 2)},
        arrived(1, 1),
        None,
        100,
        ("live", ANY, None),
    ),
    (
        "hash expired",
        {"id": "lobby", "online": "0", "name": "Lobby", "last_seen": str(NOW - 600)},
        arrived(600, 600),
        None,
        100,
        ("offline", "no heartbeat from its ingest node (last seen 10 min ago)", NOW - 600),
    ),
    (
        "hash expired, never seen",
        {"id": "lobby", "online": "0"},
        None,
        None,
        100,
        ("offline", "no heartbeat from its ingest node", None),
    ),
    (
        "stopped by its node (hash not yet expired)",
        beating(status="stopped"),
        None,
        None,
        100,
        ("offline", "stopped by its ingest node", NOW - 1),
    ),
    (
        "garbage in the registry",
        beating(fps="fast", last_seen="soon", last_frame_ts="nan"),
        None,
        None,
        100,
        ("no_frames", "waiting for the first frame", None),
    ),
    (
        "not registered, detections arrive",
        None,
        arrived(1, 1),
        None,
        100,
        ("live", "not registered; its detections arrive", None),
    ),
    (
        "not registered, frames skipped",
        None,
        arrived(1, 7, "too_old"),
        None,
        100,
        ("not_analysed", "inference skips every frame (too_old) for 7 s", NOW - 7),
    ),
    (
        "not registered, entries stopped 8 s ago",
        None,
        arrived(8, 8),
        None,
        100,
        ("not_analysed", "no detections for 8 s", NOW - 8),
    ),
    (
        "not registered, entries stopped 16 s ago",
        None,
        arrived(16, 16),
        None,
        100,
        ("offline", "not registered and no detections for 16 s", NOW - 16),
    ),
    (
        "not registered, restored state (capture time) before the first arrival",
        None,
        None,
        summary(last_ts=NOW - 2),
        100,
        ("live", ANY, None),
    ),
    (
        "not registered, restored state of an earlier run",
        None,
        None,
        summary(last_ts=NOW - 86400 * 3),
        100,
        ("offline", "not registered and no detections for 3 d", NOW - 86400 * 3),
    ),
    (
        "nothing at all",
        None,
        None,
        None,
        100,
        ("offline", "not registered and no detections", None),
    ),
]


@pytest.mark.parametrize(
    ("registry", "arrival", "stats", "expect", "expected"),
    [case[1:] for case in HEALTH_CASES],
    ids=[case[0] for case in HEALTH_CASES],
)
def test_camera_health(
    registry: dict[str, str] | None,
    arrival: Arrival | None,
    stats: CameraSummary | None,
    expect: float,
    expected: tuple[str, str, float | None],
) -> None:
    health = camera_health(
        registry, arrival, stats, now=NOW, expect_since=NOW - expect, rules=RULES
    )
    assert (health.state, health.reason, health.since) == expected


@pytest.mark.parametrize(
    ("registry", "health", "known", "expected"),
    [
        (  # registered and live, with statistics
            beating(name="Lobby"),
            CameraHealth("live", "ok"),
            None,
            {
                "status": "up",
                "online": True,
                "state": "live",
                "name": "Lobby",
                "last_seen": NOW - 1,
                "compliance": 0.75,
                "fps": 4.99,
                "configured_fps": 5.0,
                "tracks": 2,
            },
        ),
        (  # frames but no detections: online (frames arrive), state says why not live
            beating(name="  Lobby\n door "),
            CameraHealth("not_analysed", "no detections for 9 s while frames arrive", NOW - 9),
            None,
            {
                "status": "up",
                "online": True,
                "state": "not_analysed",
                "state_reason": "no detections for 9 s while frames arrive",
                "name": "Lobby door",
            },
        ),
        (  # source failing: not online, the error shown
            beating(status="reconnecting", last_error="EOF", name=""),
            CameraHealth("no_frames", "EOF"),
            None,
            {"status": "reconnecting", "online": False, "last_error": "EOF", "name": "lobby"},
        ),
        (  # hash expired: the stored name and last_seen (merged by the directory)
            {"id": "lobby", "online": "0", "name": "Lobby", "last_seen": str(NOW - 60)},
            CameraHealth("offline", "no heartbeat", NOW - 60),
            None,
            {"status": "offline", "online": False, "last_seen": NOW - 2, "name": "Lobby"},
        ),
        (  # only in the detections: the stored name, status by the state
            None,
            CameraHealth("live", "ok"),
            {"name": "Garage", "location": "Basement"},
            {"status": "up", "online": True, "name": "Garage", "location": "Basement"},
        ),
        (
            None,
            CameraHealth("offline", "gone"),
            None,
            {"status": "offline", "online": False, "name": "lobby", "compliance": 0.75},
        ),
        (  # garbage in the registry does not break the API
            {"id": "lobby", "online": "1", "fps": "fast", "last_seen": "soon"},
            CameraHealth("live", "ok"),
            None,
            {"configured_fps": None, "last_seen": NOW - 2, "status": "up"},
        ),
    ],
)
def test_camera_status(
    registry: dict[str, str] | None,
    health: CameraHealth,
    known: dict[str, str] | None,
    expected: dict[str, Any],
) -> None:
    doc = camera_status(
        "lobby", registry, summary(), health=health, since=health.since, known=known
    )
    assert {k: doc[k] for k in expected} == expected
    assert (doc["id"], doc["state_since"], doc["has_frame"]) == ("lobby", health.since, False)


def test_hostile_ids_cannot_grow_the_camera_list(tmp_path: Path) -> None:
    """The directory lists valid ids only, at most max_cameras; the board lists the
    registered cameras first, then the most recently seen ones, max_cameras in all."""
    from facemask.contracts.wire import DetectionsEntry
    from services.alerts.cameras import CameraBoard
    from services.alerts.engine import AlertEngine
    from services.alerts.rules import Rule
    from tests.services.alerts.api.conftest import Pictures

    client, clock, store = FakeRegistryRedis(), Clock(), AlertStore(tmp_path)
    found = CameraDirectory(client, LAYOUT, store, clock=clock, max_cameras=3)  # type: ignore[arg-type]
    for camera_id in ("lobby", "door", "bad\nid", "\u202eevil", "_other", "a/b"):
        client.register(camera_id)
    assert [c["id"] for c in found.all()] == ["door", "lobby"]
    engine = AlertEngine(Rule(), compliance_window=30.0)
    board = CameraBoard(
        found,
        engine,
        store,
        Pictures(),  # type: ignore[arg-type]
        LAYOUT,
        online_window=15.0,
        clock=lambda: 2e9,
        max_cameras=4,
    )
    for i in range(50):  # a flood of new ids in the detections, the latest last
        entry = DetectionsEntry(f"flood-{i:02d}", 1, "1-0", 1.9e9 + i, 1.9e9 + i, 8, 8, "m")
        engine.process("facemask:{p0}:detections", f"{i + 1}-0", entry)
    listed = [c["id"] for c in board.cameras()]
    assert listed == ["door", "flood-48", "flood-49", "lobby"]
    page, more, total = board.page(after="door", limit=2)
    assert ([c["id"] for c in page], more, total) == (["flood-48", "flood-49"], True, 4)
