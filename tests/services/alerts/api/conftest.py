"""The HTTP API in-process (Starlette's TestClient) over real SQLite and snapshot stores,
a real engine, and stand-ins for what needs Redis (the camera registry, frame pictures).

Nothing here starts Redis or a server: :func:`build` calls ``create_app`` with explicit
collaborators exactly as the composition root does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facemask.contracts.streams import StreamLayout
from services.alerts.api import create_app
from services.alerts.cameras import CameraBoard
from services.alerts.config import AlertSettings
from services.alerts.engine import AlertEngine
from services.alerts.hub import AlertHub
from services.alerts.metrics import AlertMetrics
from services.alerts.records import AlertRecord
from services.alerts.rules import Rule
from services.alerts.snapshots import SnapshotStore
from services.alerts.store import AlertStore
from services.alerts.zones import ZoneBook
from tests.services.alerts.test_store import record

TOKEN = "t0ken-for-tests"
NOW = 1_714_564_800.0


class Registry:
    """Stand-in for the camera directory: a fixed registry."""

    def __init__(self) -> None:
        self.cameras: list[dict[str, str]] = []

    def all(self) -> list[dict[str, str]]:
        return [dict(c) for c in self.cameras]

    def info(self, camera_id: str) -> Mapping[str, str]:
        return next((c for c in self.cameras if c["id"] == camera_id), {})

    def known(self, camera_id: str) -> Mapping[str, str]:
        return {}


class Pictures:
    """Stand-in for the latest-frame renderer: a JPEG per frame sid."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def get(
        self, camera_id: str, latest: Mapping[str, Any] | None, frames_stream: str | None
    ) -> tuple[str, bytes] | None:
        self.calls.append((camera_id, frames_stream))
        if latest is None:
            return None
        return str(latest["frame_sid"]), b"\xff\xd8jpeg of " + str(latest["frame_sid"]).encode()


@dataclass
class Api:
    """A built application and its collaborators."""

    client: TestClient
    settings: AlertSettings
    store: AlertStore
    snapshots: SnapshotStore
    engine: AlertEngine
    registry: Registry
    pictures: Pictures
    hub: AlertHub
    metrics: AlertMetrics
    checks: dict[str, bool] = field(
        default_factory=lambda: {"redis": True, "consumer": True, "http": True, "supervisor": True}
    )
    now: float = NOW + 60.0
    """The server's clock (review times)."""

    def add_alert(
        self, alert_id: str, camera: str = "lobby", ts: float = NOW, **kw: Any
    ) -> AlertRecord:
        """Store an alert (one webhook delivery each); ``picture=True`` saves its snapshot."""
        picture = kw.pop("picture", False)
        alert = replace(record(alert_id, camera, ts), **kw)
        if picture:
            saved = self.snapshots.save(alert_id, ts, np.full((48, 64, 3), 90, np.uint8))
            alert = replace(alert, snapshot=saved.image, thumbnail=saved.thumbnail)
        (stored,) = self.store.commit_batch([alert], ["webhook"], {}, {}, now=ts + 1)
        return stored


def build(tmp_path: Path, token: str = "", **overrides: Any) -> Api:
    settings = AlertSettings(
        state_dir=str(tmp_path / "state"),
        api_token=token,
        log_format="text",
        redis_url="redis://127.0.0.1:1/0",
        compliance_window=30.0,
        sse_heartbeat=0.05,
        **overrides,
    )
    store = AlertStore(settings.state_dir)
    snapshots = SnapshotStore(tmp_path / "snapshots", max_age=3600, max_bytes=1 << 20)
    zones = ZoneBook(settings.zones, store)
    engine = AlertEngine(Rule(k=2, n=3, cooldown=0.0), compliance_window=30.0, zones=zones)
    registry, pictures = Registry(), Pictures()
    board = CameraBoard(
        registry,  # type: ignore[arg-type]
        engine,
        store,
        pictures,  # type: ignore[arg-type]
        StreamLayout(),
        online_window=settings.online_window,
        clock=lambda: NOW,
    )
    hub, metrics = AlertHub(), AlertMetrics()
    api = Api(
        client=None,  # type: ignore[arg-type]
        settings=settings,
        store=store,
        snapshots=snapshots,
        engine=engine,
        registry=registry,
        pictures=pictures,
        hub=hub,
        metrics=metrics,
    )
    app = create_app(
        settings,
        store=store,
        snapshots=snapshots,
        cameras=board,
        hub=hub,
        registry=metrics.registry,
        readiness=lambda: dict(api.checks),
        clock=lambda: api.now,
        zones=zones,
    )
    api.client = TestClient(app, base_url="http://testserver")
    return api


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    """The API without a token."""
    built = build(tmp_path)
    yield built
    built.client.close()
    built.store.close()


@pytest.fixture()
def secured(tmp_path: Path) -> Iterator[Api]:
    """The API with ``TOKEN``."""
    built = build(tmp_path, TOKEN)
    yield built
    built.client.close()
    built.store.close()
