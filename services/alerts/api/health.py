"""Health routes: liveness and readiness (public) and the Prometheus metrics (guarded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.alerts.api.deps import ReadinessProbe, Registry
from services.alerts.api.models import Health, Readiness, ReadinessChecks

public = APIRouter(tags=["health"])
router = APIRouter(tags=["health"])


@public.get("/healthz", summary="Liveness")
def healthz() -> Health:
    return Health()


@public.get(
    "/readyz",
    summary="Readiness: Redis reachable, consumer running, no stall or dead loop",
    responses={503: {"model": Readiness, "description": "Not ready (see checks)"}},
)
def readyz(response: Response, readiness: ReadinessProbe) -> Readiness:
    values = dict(readiness())
    checks = ReadinessChecks.model_validate(values)
    ready = all(values.values())
    if not ready:
        response.status_code = 503
    return Readiness(ready=ready, checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics"}},
)
def metrics(registry: Registry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
