"""Dashboard routes: its settings and its static files (the page: test_auth)."""

from __future__ import annotations

import pytest

from facemask import __version__
from tests.services.alerts.api.conftest import TOKEN, Api


def test_config(api: Api, secured: Api) -> None:
    assert api.client.get("/api/config").json() == {
        "version": __version__,
        "compliance_window_s": 30.0,
        "latest_interval_s": 0.2,
        "auth": False,
    }
    config = secured.client.get("/api/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert config.json()["auth"] is True


@pytest.mark.parametrize(
    ("path", "status", "media"),
    [
        ("/static/app.js", 200, "javascript"),
        ("/static/app.css", 200, "text/css"),
        ("/static/favicon.svg", 200, "image/svg+xml"),
        ("/static/nope.js", 404, "application/json"),
        ("/static/../api/__init__.py", 404, "application/json"),
        ("/static/%2e%2e/store.py", 404, "application/json"),
        ("/static/", 404, "application/json"),
    ],
)
def test_static_files(api: Api, path: str, status: int, media: str) -> None:
    response = api.client.get(path)
    assert response.status_code == status, path
    assert media in response.headers["content-type"]
    if status == 404:
        assert response.json() == {"detail": "Not Found", "message": "Not Found"}


def test_static_files_answer_head_and_conditional_requests(api: Api) -> None:
    head = api.client.head("/static/app.js")
    assert head.status_code == 200 and head.content == b"" and "etag" in head.headers
    again = api.client.get("/static/app.js", headers={"If-None-Match": head.headers["etag"]})
    assert again.status_code == 304
