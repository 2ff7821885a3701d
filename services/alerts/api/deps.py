"""The collaborators of the HTTP API, handed to the routes as FastAPI dependencies.

:func:`~services.alerts.api.app.create_app` stores one :class:`Collaborators` on the
application (``app.state.collaborators``); each route names what it uses with the
``Annotated`` aliases below (``store: Store``), so its needs are explicit and a test can
replace any of them (``app.dependency_overrides``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from services.alerts.api.auth import TokenAuth
from services.alerts.cameras import CameraBoard
from services.alerts.config import AlertSettings
from services.alerts.hub import AlertHub
from services.alerts.snapshots import SnapshotStore
from services.alerts.store import AlertStore
from services.alerts.zones import ZoneBook

ReadinessCheck = Callable[[], Mapping[str, bool]]


@dataclass(frozen=True, slots=True)
class Collaborators:
    """Everything the routes use."""

    settings: AlertSettings
    store: AlertStore
    snapshots: SnapshotStore
    cameras: CameraBoard
    hub: AlertHub
    registry: CollectorRegistry
    readiness: ReadinessCheck
    auth: TokenAuth | None
    zones: ZoneBook
    clock: Callable[[], float] = time.time
    """The server's clock (review times)."""


def collaborators(conn: HTTPConnection) -> Collaborators:
    """The collaborators of the application serving ``conn``."""
    return cast(Collaborators, conn.app.state.collaborators)


def _settings(conn: HTTPConnection) -> AlertSettings:
    return collaborators(conn).settings


def _store(conn: HTTPConnection) -> AlertStore:
    return collaborators(conn).store


def _snapshots(conn: HTTPConnection) -> SnapshotStore:
    return collaborators(conn).snapshots


def _cameras(conn: HTTPConnection) -> CameraBoard:
    return collaborators(conn).cameras


def _hub(conn: HTTPConnection) -> AlertHub:
    return collaborators(conn).hub


def _registry(conn: HTTPConnection) -> CollectorRegistry:
    return collaborators(conn).registry


def _readiness(conn: HTTPConnection) -> ReadinessCheck:
    return collaborators(conn).readiness


def _auth(conn: HTTPConnection) -> TokenAuth | None:
    return collaborators(conn).auth


def _clock(conn: HTTPConnection) -> Callable[[], float]:
    return collaborators(conn).clock


def _zones(conn: HTTPConnection) -> ZoneBook:
    return collaborators(conn).zones


Settings = Annotated[AlertSettings, Depends(_settings)]
Store = Annotated[AlertStore, Depends(_store)]
Snapshots = Annotated[SnapshotStore, Depends(_snapshots)]
Cameras = Annotated[CameraBoard, Depends(_cameras)]
Hub = Annotated[AlertHub, Depends(_hub)]
Registry = Annotated[CollectorRegistry, Depends(_registry)]
ReadinessProbe = Annotated[ReadinessCheck, Depends(_readiness)]
Auth = Annotated[TokenAuth | None, Depends(_auth)]
Clock = Annotated[Callable[[], float], Depends(_clock)]
Zones = Annotated[ZoneBook, Depends(_zones)]
