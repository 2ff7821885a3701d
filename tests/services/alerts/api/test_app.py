"""The application as a whole: every JSON route documents its response model in the
OpenAPI schema, every error response is a Problem, and the API stands on its own (it does
not import the service that wires it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.alerts.api import models
from tests.fixtures.paths import REPO_ROOT
from tests.services.alerts.api.conftest import Api

# Each JSON route (method, path) and the model of its 200 answer.
JSON_ROUTES = {
    ("get", "/healthz"): "Health",
    ("get", "/readyz"): "Readiness",
    ("get", "/api/cameras"): "CameraList",
    ("get", "/api/alerts"): "AlertPage",
    ("get", "/api/alerts/{alert_id}"): "AlertDetail",
    ("post", "/api/alerts/{alert_id}/review"): "AlertDetail",
    ("get", "/api/config"): "DashboardConfig",
    ("get", "/api/health"): "PipelineHealth",
    ("get", "/api/cameras/{camera_id}/zones"): "ZonesOut",
    ("put", "/api/cameras/{camera_id}/zones"): "ZonesOut",
    ("delete", "/api/cameras/{camera_id}/zones"): "ZonesOut",
}
OTHER_ROUTES = {  # GET path: media types of the 200 answer
    "/metrics": ["text/plain; version=1.0.0; charset=utf-8"],
    "/api/cameras/{camera_id}/latest.jpg": ["image/jpeg"],
    "/api/alerts/{alert_id}/snapshot.jpg": ["image/jpeg"],
    "/api/alerts/{alert_id}/thumbnail.jpg": ["image/jpeg"],
    "/api/alerts/{alert_id}/frame.jpg": ["image/jpeg", "image/png"],
    "/api/events": ["text/event-stream"],
}
NO_CONTENT_ROUTES = {("delete", "/api/cameras/{camera_id}")}  # 204, no body


def operations(schema: dict) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    """Every documented operation by (method, path)."""
    return {(m, path): op for path, ops in schema["paths"].items() for m, op in ops.items()}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@pytest.fixture()
def schema(api: Api) -> dict:  # type: ignore[type-arg]
    return api.client.get("/openapi.json").json()


def test_the_documented_routes_are_the_routes(schema: dict) -> None:  # type: ignore[type-arg]
    ops = operations(schema)
    assert set(ops) == (
        set(JSON_ROUTES) | {("get", path) for path in OTHER_ROUTES} | NO_CONTENT_ROUTES
    )
    # Every route answering JSON names a model for it (none is an untyped object).
    json_routes = {
        key
        for key, op in ops.items()
        if "application/json" in op["responses"].get("200", {}).get("content", {})
    }
    assert json_routes == set(JSON_ROUTES)


@pytest.mark.parametrize(("route", "model"), JSON_ROUTES.items())
def test_each_json_route_documents_its_response_model(
    schema: dict,  # type: ignore[type-arg]
    route: tuple[str, str],
    model: str,
) -> None:
    ok = operations(schema)[route]["responses"]["200"]
    assert ok["content"] == {"application/json": {"schema": ref(model)}}
    assert model in schema["components"]["schemas"]
    assert hasattr(models, model)


@pytest.mark.parametrize(("path", "media"), OTHER_ROUTES.items())
def test_pictures_metrics_and_events_document_their_media_type(
    schema: dict,  # type: ignore[type-arg]
    path: str,
    media: list[str],
) -> None:
    assert list(schema["paths"][path]["get"]["responses"]["200"]["content"]) == media


def test_every_error_answer_is_documented_as_a_problem(schema: dict) -> None:  # type: ignore[type-arg]
    seen = set()
    for route, op in operations(schema).items():
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and route != ("get", "/readyz"):
                assert answer["content"] == {"application/json": {"schema": ref("Problem")}}, (
                    route,
                    status,
                )
                seen.add(status)
    assert seen == {"400", "404", "409", "422", "503"}  # (401 only with a token: test_auth)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["paths"]["/readyz"]["get"]["responses"]["503"]["content"] == {
        "application/json": {"schema": ref("Readiness")}
    }


def test_the_alert_schema_lists_every_field_of_an_alert(api: Api, schema: dict) -> None:  # type: ignore[type-arg]
    stored = api.add_alert("a" * 32, picture=True)
    documented = set(schema["components"]["schemas"]["AlertOut"]["properties"])
    assert documented == set(models.AlertOut.fields_of(stored))
    assert set(schema["components"]["schemas"]["AlertDetail"]["properties"]) == documented | {
        "deliveries"
    }


def test_the_api_does_not_import_the_service() -> None:
    code = (
        "import sys\n"
        "import services.alerts.api\n"
        "leaked = [m for m in ('services.alerts.service', 'services.alerts.consumer',"
        " 'services.alerts.__main__') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
