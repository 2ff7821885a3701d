"""The Prometheus ``/metrics`` HTTP endpoint of a service: one way to run it."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsServer:
    """A running ``/metrics`` endpoint (its own daemon thread); :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server: WSGIServer | None = server
        self._thread = thread
        self.port = int(server.server_port)
        """The bound port (the one asked for, or a free one when asked for 0)."""

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5.0)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (``port`` 0: any free port); raises ``OSError``
    when the address cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
