"""``python -m services.alerts`` / ``facemask serve-alerts``: run the alert service.

Exit codes: 0 after SIGTERM / SIGINT, 2 for a configuration error (also a stream layout
that differs from the one in Redis), 1 for an unexpected failure, 70 after a fatal verdict
of the supervisor (a background loop died too often, or the HTTP server thread ended).
Importing this module loads neither TensorFlow nor gRPC.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from facemask.infra.helpformat import show_default
from facemask.infra.lifecycle import module_main, serve_supervised, stop_on_signals
from facemask.infra.log import setup_logging
from facemask.infra.settings import ConfigError, check_config_and_exit, setting_default

if TYPE_CHECKING:
    from services.alerts.service import AlertService

logger = logging.getLogger("services.alerts")

HELP = "run the alert service and dashboard"
EXAMPLES = (
    "facemask serve-alerts --port 8080 --state-dir /var/lib/facemask/alerts",
    "# validate the settings (FACEMASK_ALERTS_* variables too), print them and exit",
    "FACEMASK_ALERTS_WEBHOOK_URL=https://hooks.example/x FACEMASK_ALERTS_WEBHOOK_SECRET=s3cret "
    "facemask serve-alerts --check-config",
)


def _default(name: str) -> Callable[[], Any]:
    """The default of setting ``name``, for ``--help`` (imports the settings only then)."""

    def default() -> Any:
        from services.alerts.config import AlertSettings

        return setting_default(AlertSettings, name)

    return default


def configure(parser: argparse.ArgumentParser) -> None:
    """Command-line options (each overrides its FACEMASK_ALERTS_ variable)."""
    for option, name, kwargs in (
        ("--host", "host", {"help": "HTTP bind address (FACEMASK_ALERTS_HOST)"}),
        ("--port", "port", {"type": int, "help": "HTTP port (FACEMASK_ALERTS_PORT)"}),
        ("--redis-url", "redis_url", {"help": "Redis URL (FACEMASK_ALERTS_REDIS_URL)"}),
        ("--state-dir", "state_dir", {"help": "database directory (FACEMASK_ALERTS_STATE_DIR)"}),
        (
            "--metrics-port",
            "metrics_port",
            {"type": int, "help": "extra Prometheus port, 0: none (FACEMASK_ALERTS_METRICS_PORT)"},
        ),
    ):
        show_default(parser.add_argument(option, **kwargs), _default(name))
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it and exit (0: valid, 2: invalid)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("host", "port", "redis_url", "state_dir", "metrics_port"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM / SIGINT."""
    from services.alerts.config import AlertSettings

    if getattr(args, "check_config", False):
        check_config_and_exit(AlertSettings, **_overrides(args))
    try:
        settings = AlertSettings.load(**_overrides(args))
    except ConfigError as exc:
        sys.stderr.write(f"facemask serve-alerts: configuration error: {exc}\n")
        return 2
    setup_logging(
        getattr(args, "log_level", None) or settings.log_level,
        fmt=settings.log_format,
        service="alerts",
    )

    from facemask.contracts.streams import LayoutMismatchError
    from services.alerts.service import AlertService

    stop = stop_on_signals(logger)
    try:
        service = AlertService(settings)
    except OSError as exc:
        logger.error("cannot open the state directory", extra={"error": str(exc)})
        return 2
    try:
        service.start()
    except LayoutMismatchError as exc:
        logger.error("stream layout mismatch", extra={"error": str(exc)})
        service.stop()
        return 2
    except OSError as exc:
        logger.error("cannot start", extra={"error": str(exc)})
        service.stop()
        return 1
    except Exception:
        logger.exception("alert service failed to start")
        service.stop()
        return 1
    return serve(service, stop)


def serve(service: AlertService, stop: threading.Event) -> int:
    """Serve until ``stop`` (a signal) or a fatal supervisor verdict; the exit code (0 clean
    drain, 1 unclean, 70 unhealthy: :func:`facemask.infra.lifecycle.serve_supervised`)."""
    return serve_supervised(service.supervisor, stop, service.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.alerts``."""
    return module_main(
        "python -m services.alerts", __doc__, configure, run, argv, examples=EXAMPLES
    )


if __name__ == "__main__":
    sys.exit(main())
