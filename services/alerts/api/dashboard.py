"""The dashboard: its page (with the token sign-in), its static files and its settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from facemask import __version__
from services.alerts.api.auth import Credentials, credentials, sign_in_page, signed_in_redirect
from services.alerts.api.deps import Auth, Settings
from services.alerts.api.models import DashboardConfig

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: ``/`` checks the token itself: it answers a sign-in form, not a JSON 401.
page = APIRouter(tags=["dashboard"])
#: Static files and settings, behind the API's auth dependency like the API.
router = APIRouter(tags=["dashboard"])

_static = StaticFiles(directory=STATIC_DIR)


@page.get("/", include_in_schema=False)
def index(
    request: Request, creds: Annotated[Credentials, Depends(credentials)], auth: Auth
) -> Response:
    if auth is not None:
        if creds.query is not None:  # the sign-in form, or a link with the token
            if not auth.accepts_token(creds.query):
                return sign_in_page("wrong token")
            rest = {k: v for k, v in parse_qs(request.url.query).items() if k != "token"}
            location = "/" + ("?" + urlencode(rest, doseq=True) if rest else "")
            return signed_in_redirect(location, creds.query)
        if not auth.accepts(creds):
            return sign_in_page("wrong token" if creds.presented() else "")
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static(request: Request, path: str) -> Response:
    relative = os.path.normpath(os.path.join(*path.split("/")))  # as StaticFiles does
    return await _static.get_response(relative, request.scope)


@router.get("/api/config", summary="Settings the dashboard needs")
def config(settings: Settings) -> DashboardConfig:
    return DashboardConfig(
        version=__version__,
        compliance_window_s=settings.compliance_window,
        latest_interval_s=max(settings.latest_min_interval, 0.2),
        auth=bool(settings.api_token),
    )
