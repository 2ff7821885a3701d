"""Error answers of the API: ``{"detail": ..., "message": ...}`` for every 4xx / 5xx.

``detail`` is FastAPI's (a string, or the list of invalid parameters for 422); ``message``
is one readable sentence naming the parameter and the problem.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.alerts.api.auth import Unauthorized


def _loc(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    if len(loc) >= 2 and loc[0] in ("query", "path", "header"):
        kind = {"query": "query parameter", "path": "path parameter", "header": "header"}[loc[0]]
        return f"{kind} {'.'.join(loc[1:])!r}"
    return ".".join(loc) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Answer invalid parameters, HTTP errors and missing tokens in the API's format."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = [f"{_loc(e)}: {e.get('msg', 'invalid')}" for e in errors]
        clean = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse(
            status_code=422, content={"detail": clean, "message": "; ".join(problems)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.detail, "message": str(exc.detail)},
            headers=exc.headers,
        )

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.detail, "message": f"401 Unauthorized: {exc.detail}"},
            headers=exc.headers,
        )
