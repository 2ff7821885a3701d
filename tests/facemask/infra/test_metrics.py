"""serve_metrics: a registry's /metrics on a port, closed cleanly."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from facemask.infra.metrics import serve_metrics


def test_serves_the_registry_and_releases_the_port_on_close() -> None:
    registry = CollectorRegistry()
    Counter("facemask_test_things", "Things.", registry=registry).inc(3)
    server = serve_metrics(registry, 0, "127.0.0.1")
    assert server.port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "facemask_test_things_total 3.0" in body
    server.close()
    server.close()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass
    # The port is free again.
    again = serve_metrics(registry, server.port, "127.0.0.1")
    assert again.port == server.port
    again.close()
