"""What the service knows of each camera: the registry cache (an injected clock), names
kept for offline cameras, and one camera's status from registry + engine statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from services.alerts.cameras import CameraDirectory, camera_status
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
    # A new process knows the name from the database (not the last_seen: it was not there).
    restarted = CameraDirectory(client, LAYOUT, store, clock=clock)  # type: ignore[arg-type]
    again = restarted.info("lobby")
    assert (again["name"], again["online"]) == ("Lobby", "0") and "last_seen" not in again
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


@pytest.mark.parametrize(
    ("registry", "stats", "expected"),
    [
        (  # registered and up, with statistics
            {
                "id": "lobby",
                "online": "1",
                "status": "up",
                "name": "Lobby",
                "fps": "5",
                "last_seen": str(NOW - 1),
            },
            summary(),
            {
                "status": "up",
                "online": True,
                "name": "Lobby",
                "last_seen": NOW - 1,
                "compliance": 0.75,
                "fps": 4.99,
                "configured_fps": 5.0,
                "tracks": 2,
            },
        ),
        (  # registered, online but its source is failing
            {"id": "lobby", "online": "1", "status": "reconnecting", "last_error": "EOF"},
            None,
            {
                "status": "reconnecting",
                "online": False,
                "last_error": "EOF",
                "fps": 0.0,
                "compliance": None,
                "last_seen": None,
                "name": "lobby",
            },
        ),
        (  # registered once, hash expired
            {"id": "lobby", "online": "0", "name": "Lobby"},
            summary(),
            {"status": "offline", "online": False, "last_seen": NOW - 2},
        ),
        (  # never registered, frames recently: up by the detections alone
            None,
            summary(),
            {"status": "up", "online": True, "last_frame_ts": NOW - 2},
        ),
        (  # never registered, frames too long ago
            None,
            summary(last_ts=NOW - 16),
            {"status": "offline", "online": False},
        ),
        (  # no faces in the window: compliance unknown, not 0
            None,
            summary(masked=0, faces=0),
            {"compliance": None, "faces": 0},
        ),
        (  # garbage in the registry does not break the API
            {"id": "lobby", "online": "1", "fps": "fast", "last_seen": "soon"},
            None,
            {"configured_fps": None, "last_seen": None, "status": "up"},
        ),
    ],
)
def test_camera_status(
    registry: dict[str, str] | None, stats: CameraSummary | None, expected: dict[str, Any]
) -> None:
    doc = camera_status("lobby", registry, stats, now=NOW, online_window=15.0)
    assert {k: doc[k] for k in expected} == expected
    assert doc["id"] == "lobby"


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
