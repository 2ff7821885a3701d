"""Health routes: liveness, readiness (200 / 503 with the checks), Prometheus text."""

from __future__ import annotations

import pytest

from tests.services.alerts.api.conftest import Api


def test_liveness(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}


CHECKS = ("redis", "consumer", "http", "supervisor")


@pytest.mark.parametrize("failing", [None, *CHECKS])
def test_readiness(api: Api, failing: str | None) -> None:
    if failing:
        api.checks[failing] = False
    response = api.client.get("/readyz")
    assert response.status_code == (503 if failing else 200)
    assert response.json() == {
        "ready": failing is None,
        "checks": {name: name != failing for name in CHECKS},
    }


def test_metrics(api: Api) -> None:
    api.metrics.consumed.inc(3)
    response = api.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "facemask_alerts_detections_consumed_total 3.0" in response.text
