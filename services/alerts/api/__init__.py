"""HTTP API and dashboard of the alert service (FastAPI; OpenAPI at ``/openapi.json``).

Routes, one router per domain::

    health.py     GET /healthz, /readyz          liveness / readiness (Redis + consumer)
                  GET /metrics                   Prometheus
    cameras.py    GET /api/cameras               status, last seen, fps, compliance per camera
                  GET /api/cameras/{id}/latest.jpg   latest frame with its boxes (ETag / 304)
    alerts.py     GET /api/alerts                newest first; camera_id, state, since, until,
                                                 limit, cursor (opaque, from next_cursor)
                  GET /api/alerts/{id}           one alert with its deliveries
                  POST /api/alerts/{id}/review   acknowledge / confirm / false positive / new
                  GET /api/alerts/{id}/snapshot.jpg    the annotated frame of the alert
                  GET /api/alerts/{id}/thumbnail.jpg   320 px wide version
                  GET /api/alerts/{id}/frame.jpg       the clean frame, as captured
    zones.py      GET, PUT /api/cameras/{id}/zones   ignore masks / include zones (stored)
    events.py     GET /api/events                server-sent events: "alert" per new alert,
                                                 "review" per review change; resumes after
                                                 Last-Event-ID (or ?last_event_id)
    dashboard.py  GET /, /static/...             dashboard (static HTML/CSS/JS, no CDN)
                  GET /api/config                settings the dashboard needs

:func:`~services.alerts.api.app.create_app` builds the application from explicit
collaborators (:mod:`~services.alerts.api.deps`); every JSON answer has a pydantic model
(:mod:`~services.alerts.api.models`), so the OpenAPI schema documents each response.

Times (``since``, ``until``) are ISO-8601 (``2024-05-01T12:00:00Z``; no zone = UTC) or
unix seconds. Bad parameters answer 4xx with a readable ``message`` / ``detail``.

Auth (``FACEMASK_ALERTS_API_TOKEN``, :mod:`~services.alerts.api.auth`): every route but
``/healthz`` and ``/readyz`` needs the token, as ``Authorization: Bearer <token>``, as
``?token=<token>`` (for EventSource and images, which cannot send headers), or as the
``facemask_token`` cookie. Opening the dashboard with ``/?token=...`` sets that cookie
(HttpOnly, SameSite=Strict) and redirects to ``/``, so the token leaves the address bar and
the page's images and event stream are authorised by the cookie. A missing or wrong token
gets 401 (an HTML sign-in form for the dashboard page).
"""

from __future__ import annotations

from services.alerts.api.app import create_app

__all__ = ["create_app"]
