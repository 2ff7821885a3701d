"""The application factory: the routers of :mod:`services.alerts.api` over explicit
collaborators (no reference to the service that owns them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Security
from fastapi.params import Depends
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from facemask import __version__
from services.alerts.api import alerts as alert_routes
from services.alerts.api import cameras as camera_routes
from services.alerts.api import dashboard, events, health
from services.alerts.api import zones as zone_routes
from services.alerts.api.auth import SecureCookies, TokenAuth
from services.alerts.api.deps import Collaborators, ReadinessCheck
from services.alerts.api.errors import install_error_handlers
from services.alerts.api.models import problems
from services.alerts.cameras import CameraBoard
from services.alerts.config import AlertSettings
from services.alerts.hub import AlertHub
from services.alerts.snapshots import SnapshotStore
from services.alerts.store import AlertStore
from services.alerts.zones import ZoneBook


def create_app(
    settings: AlertSettings,
    *,
    store: AlertStore,
    snapshots: SnapshotStore,
    cameras: CameraBoard,
    hub: AlertHub,
    registry: CollectorRegistry,
    readiness: ReadinessCheck,
    clock: Callable[[], float] = time.time,
    zones: ZoneBook | None = None,
) -> FastAPI:
    """The FastAPI application of the alert service.

    ``readiness`` returns the checks of ``/readyz`` (``redis``, ``consumer``, ``http``);
    ``clock`` is the server's time (when a review was made).
    ``zones`` are the cameras' zones the engine applies (default: the board's engine's).
    With ``settings.api_token`` (or ``allow_anonymous_read``) every router but the health
    checks' runs the :class:`~services.alerts.api.auth.TokenAuth` security dependency;
    cookies set over TLS are ``Secure`` (:class:`~services.alerts.api.auth.SecureCookies`).
    """
    app = FastAPI(
        title="facemask alerts",
        version=__version__,
        description="Face-mask alerts: cameras, alert history, snapshots, live events.",
        docs_url=None,  # Swagger UI / ReDoc load their assets from a CDN
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like the API
    )
    auth = (
        TokenAuth(settings.api_token, anonymous_read=settings.allow_anonymous_read)
        if settings.api_token or settings.allow_anonymous_read
        else None
    )
    app.state.collaborators = Collaborators(
        settings=settings,
        store=store,
        snapshots=snapshots,
        cameras=cameras,
        hub=hub,
        registry=registry,
        readiness=readiness,
        auth=auth,
        clock=clock,
        zones=zones if zones is not None else cameras.engine.zones,
    )
    install_error_handlers(app)
    app.add_middleware(
        SecureCookies,
        trusted_proxies=settings.proxy_networks,
        public_https=settings.public_base_url.startswith("https://"),
    )

    guard: list[Depends] = [Security(auth)] if auth else []
    denied: dict[int | str, dict[str, Any]] = problems(401) if auth else {}
    app.include_router(health.public)
    routers = (health.router, camera_routes.router, alert_routes.router, events.router)
    for router in (*routers, zone_routes.router):
        app.include_router(router, dependencies=guard, responses=denied)
    app.include_router(dashboard.page)
    app.include_router(dashboard.router, dependencies=guard, responses=denied)

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app
