"""HTTP API and dashboard of the alert service (FastAPI; OpenAPI at ``/openapi.json``).

Routes::

    GET /                                   dashboard (static HTML/CSS/JS, no CDN)
    GET /api/cameras                        status, last seen, fps, compliance per camera
    GET /api/cameras/{id}/latest.jpg        latest frame with its boxes (ETag / 304)
    GET /api/alerts                         newest first; camera_id, since, until, limit,
                                            cursor (opaque, from next_cursor)
    GET /api/alerts/{id}                    one alert with its deliveries
    GET /api/alerts/{id}/snapshot.jpg       the annotated frame of the alert
    GET /api/alerts/{id}/thumbnail.jpg      320 px wide version
    GET /api/events                         server-sent events: "alert" per new alert;
                                            resumes after Last-Event-ID (or ?last_event_id)
    GET /healthz, /readyz                   liveness / readiness (Redis + consumer)
    GET /metrics                            Prometheus

Times (``since``, ``until``) are ISO-8601 (``2024-05-01T12:00:00Z``; no zone = UTC) or
unix seconds. Bad parameters answer 4xx with a readable ``message`` / ``detail``.

Auth (``FACEMASK_ALERTS_API_TOKEN``): every route but ``/healthz`` and ``/readyz`` needs
the token, as ``Authorization: Bearer <token>``, as ``?token=<token>`` (for EventSource
and images, which cannot send headers), or as the ``facemask_token`` cookie. Opening the
dashboard with ``/?token=...`` sets that cookie (HttpOnly, SameSite=Strict) and redirects
to ``/``, so the token leaves the address bar and the page's images and event stream are
authorised by the cookie. A missing or wrong token gets 401 (an HTML sign-in form for
the dashboard page).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from facemask import __version__
from services.alerts.store import CursorError

if TYPE_CHECKING:
    from services.alerts.service import AlertService

STATIC_DIR = Path(__file__).with_name("static")
COOKIE = "facemask_token"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
ALERT_ID = r"^[0-9a-f]{32}$"
MAX_LIMIT = 500

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SIGN_IN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facemask alerts - sign in</title>
<style>body{{font:16px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;
place-items:center;min-height:100vh;margin:0}}form{{background:#1e293b;padding:2rem;
border-radius:12px;display:grid;gap:.8rem;width:min(22rem,90vw)}}input,button{{font:inherit;
padding:.6rem;border-radius:8px;border:1px solid #334155}}button{{background:#2563eb;color:#fff;
border:0}}p{{margin:0;color:#fca5a5}}</style></head><body>
<form method="get" action="/"><strong>facemask alerts</strong>{message}
<input name="token" type="password" placeholder="API token" autofocus required>
<button type="submit">Sign in</button></form></body></html>"""


# -- parameters ------------------------------------------------------------------------


def parse_time(name: str, raw: str | None) -> float | None:
    """ISO-8601 or unix seconds -> unix seconds; HTTP 400 with a clear message otherwise."""
    if raw is None or raw == "":
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise HTTPException(
                400,
                f"{name}: expected an ISO-8601 time (e.g. 2024-05-01T12:00:00Z) or unix "
                f"seconds, got {raw[:64]!r}",
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value) or value < 0:
        raise HTTPException(400, f"{name}: unix seconds must be a finite number >= 0")
    return value


def _loc(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    if len(loc) >= 2 and loc[0] in ("query", "path", "header"):
        kind = {"query": "query parameter", "path": "path parameter", "header": "header"}[loc[0]]
        return f"{kind} {'.'.join(loc[1:])!r}"
    return ".".join(loc) or "request"


# -- auth ------------------------------------------------------------------------------


class TokenAuth:
    """ASGI middleware: bearer token on every route but the health checks."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest((candidate or "").encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        from_query = query.get("token", [None])[0]
        path = scope["path"]
        if path == "/" and from_query is not None:
            if self._ok(from_query):
                rest = {k: v for k, v in query.items() if k != "token"}
                location = "/" + ("?" + urlencode(rest, doseq=True) if rest else "")
                await _redirect_with_cookie(send, location, from_query)
            else:
                await _sign_in(send, "wrong token")
            return
        if self._ok(bearer) or self._ok(from_query) or self._ok(from_cookie):
            await self.app(scope, receive, send)
            return
        presented = any(v is not None for v in (bearer, from_query, from_cookie))
        if path in ("/", "/index.html"):
            await _sign_in(send, "wrong token" if presented else "")
            return
        detail = "invalid bearer token" if presented else "missing bearer token"
        body = json.dumps({"detail": detail, "message": f"401 Unauthorized: {detail}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="facemask"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Send, location: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _sign_in(send: Send, message: str) -> None:
    text = f"<p>{html.escape(message)}</p>" if message else ""
    body = SIGN_IN_PAGE.format(message=text).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"www-authenticate", b'Bearer realm="facemask"'),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the app ---------------------------------------------------------------------------


def _sse(event: dict[str, Any]) -> str:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['seq']}\nevent: alert\ndata: {data}\n\n"


def create_app(service: AlertService) -> FastAPI:
    """The FastAPI application of ``service``."""
    settings = service.settings
    app = FastAPI(
        title="facemask alerts",
        version=__version__,
        description="Face-mask alerts: cameras, alert history, snapshots, live events.",
        docs_url=None,  # Swagger UI / ReDoc load their assets from a CDN
        redoc_url=None,
    )

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

    # -- health ----------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: Redis reachable, consumer running")
    def readyz() -> JSONResponse:
        checks = service.readiness()
        ready = all(checks.values())
        return JSONResponse(
            status_code=200 if ready else 503, content={"ready": ready, "checks": checks}
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- cameras ---------------------------------------------------------------------

    @app.get("/api/cameras", tags=["cameras"], summary="Cameras with status and compliance")
    def cameras() -> dict[str, Any]:
        now = time.time()
        return {"cameras": service.cameras(now), "now": now}

    @app.get(
        "/api/cameras/{camera_id}/latest.jpg",
        tags=["cameras"],
        summary="The camera's latest frame with its detections drawn",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 304: {}, 404: {}},
    )
    def latest(
        request: Request,
        camera_id: Annotated[str, PathParam(min_length=1, max_length=128)],
    ) -> Response:
        entry = service.engine.latest(camera_id)
        if entry is None and camera_id not in {c["id"] for c in service.directory.all()}:
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        result = service.latest_frames.get(camera_id, entry, service.frames_stream_of(entry))
        if result is None:
            raise HTTPException(404, f"no frame of camera {camera_id!r} yet")
        sid, jpeg = result
        etag = f'"{sid}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    # -- alerts ----------------------------------------------------------------------

    @app.get("/api/alerts", tags=["alerts"], summary="Alert history, newest first")
    def alerts(
        camera_id: Annotated[
            str | None, Query(min_length=1, max_length=128, description="only this camera")
        ] = None,
        since: Annotated[
            str | None, Query(description="from this time (ISO-8601 or unix seconds)")
        ] = None,
        until: Annotated[
            str | None, Query(description="before this time (ISO-8601 or unix seconds)")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
        cursor: Annotated[
            str | None, Query(max_length=200, description="next_cursor of the previous page")
        ] = None,
    ) -> dict[str, Any]:
        t0, t1 = parse_time("since", since), parse_time("until", until)
        if t0 is not None and t1 is not None and t0 > t1:
            raise HTTPException(400, "since must not be after until")
        try:
            records, next_cursor = service.store.list_alerts(
                camera_id=camera_id, since=t0, until=t1, limit=limit, cursor=cursor
            )
        except CursorError as exc:
            raise HTTPException(400, str(exc)) from None
        return {
            "alerts": [service.alert_json(r) for r in records],
            "next_cursor": next_cursor,
            "count": len(records),
        }

    def _alert(alert_id: str) -> Any:
        record = service.store.get_alert(alert_id)
        if record is None:
            raise HTTPException(404, f"alert {alert_id!r} not found")
        return record

    @app.get("/api/alerts/{alert_id}", tags=["alerts"], summary="One alert and its deliveries")
    def alert(alert_id: Annotated[str, PathParam(pattern=ALERT_ID)]) -> dict[str, Any]:
        record = _alert(alert_id)
        doc = service.alert_json(record)
        doc["deliveries"] = [
            {
                "sink": d.sink,
                "status": d.status,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "next_attempt": d.next_attempt if d.status == "pending" else None,
                "done_at": d.done_at,
            }
            for d in service.store.deliveries(alert_id)
        ]
        return doc

    def _picture(alert_id: str, thumbnail: bool) -> FileResponse:
        record = _alert(alert_id)
        relative = record.thumbnail if thumbnail else record.snapshot
        if relative is None:
            raise HTTPException(
                404,
                f"alert {alert_id!r} has no snapshot: its frame had left the frame stream "
                "before the alert was processed",
            )
        path = service.snapshots.path(relative)
        if path is None:
            raise HTTPException(404, f"the snapshot of alert {alert_id!r} was deleted (retention)")
        return FileResponse(
            path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
        )

    @app.get(
        "/api/alerts/{alert_id}/snapshot.jpg",
        tags=["alerts"],
        summary="The alert's annotated frame",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {}},
    )
    def snapshot(alert_id: Annotated[str, PathParam(pattern=ALERT_ID)]) -> FileResponse:
        return _picture(alert_id, False)

    @app.get(
        "/api/alerts/{alert_id}/thumbnail.jpg",
        tags=["alerts"],
        summary="The alert's annotated frame, 320 px wide",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {}},
    )
    def thumbnail(alert_id: Annotated[str, PathParam(pattern=ALERT_ID)]) -> FileResponse:
        return _picture(alert_id, True)

    @app.get(
        "/api/events",
        tags=["alerts"],
        summary="Server-sent events: one 'alert' event per new alert",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        request: Request,
        last_event_id: Annotated[
            int | None, Query(ge=0, description="resume after this alert seq")
        ] = None,
    ) -> StreamingResponse:
        header = request.headers.get("last-event-id")
        resume = last_event_id
        if header:
            try:
                resume = int(header)
            except ValueError:
                raise HTTPException(400, "Last-Event-ID must be an alert seq (integer)") from None
        return StreamingResponse(
            _event_stream(service, resume, settings.sse_heartbeat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/config", tags=["dashboard"], summary="Settings the dashboard needs")
    def config() -> dict[str, Any]:
        return {
            "version": __version__,
            "compliance_window_s": settings.compliance_window,
            "latest_interval_s": max(settings.latest_min_interval, 0.2),
            "auth": bool(settings.api_token),
        }

    # -- dashboard -------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    if settings.api_token:
        schema = app.openapi()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearer": []}]
        app.add_middleware(TokenAuth, token=settings.api_token)
    return app


async def _event_stream(
    service: AlertService, resume: int | None, heartbeat: float
) -> AsyncIterator[str]:
    sub = service.hub.subscribe()
    try:
        yield "retry: 2000\n\n"
        # Without a resume point the stream starts now: pass on whatever arrives. With one,
        # replay from the database first and skip queued events the replay already sent.
        seen = resume or 0
        if resume is not None:
            while True:
                missed = await run_in_threadpool(service.store.alerts_after, seen, 200)
                for record in missed:
                    yield _sse(service.alert_json(record))
                    seen = record.seq
                if len(missed) < 200:
                    break
        yield ": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=heartbeat)
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if event is None:
                return
            if int(event["seq"]) <= seen:
                continue
            seen = int(event["seq"])
            yield _sse(dict(event))
    finally:
        service.hub.unsubscribe(sub)
