"""``python -m services.inference`` / ``facemask serve-inference``: run the inference service."""

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
    from services.inference.service import InferenceService

logger = logging.getLogger("services.inference")

HELP = "run the gRPC inference service"
EXAMPLES = (
    "facemask serve-inference --port 50051 --metrics-port 9101",
    "# validate the settings (FACEMASK_INFERENCE_* variables too), print them and exit",
    "FACEMASK_INFERENCE_RUNTIME=tflite facemask serve-inference --check-config",
    "# gRPC only: answer Detect calls without consuming the Redis frame streams",
    "facemask serve-inference --no-streams --port 50052",
)


def _default(name: str) -> Callable[[], Any]:
    """The default of setting ``name``, for ``--help`` (imports the settings only then)."""

    def default() -> Any:
        from services.inference.config import InferenceSettings

        return setting_default(InferenceSettings, name)

    return default


def configure(parser: argparse.ArgumentParser) -> None:
    """Command-line options (each overrides its FACEMASK_INFERENCE_ variable)."""
    for option, name, kwargs in (
        ("--port", "port", {"type": int, "help": "gRPC port (FACEMASK_INFERENCE_PORT)"}),
        ("--host", "host", {"help": "gRPC bind address (FACEMASK_INFERENCE_HOST)"}),
        (
            "--metrics-port",
            "metrics_port",
            {"type": int, "help": "Prometheus port, 0: none (FACEMASK_INFERENCE_METRICS_PORT)"},
        ),
        ("--redis-url", "redis_url", {"help": "Redis URL (FACEMASK_INFERENCE_REDIS_URL)"}),
        ("--runtime", "runtime", {"help": "detector runtime (FACEMASK_INFERENCE_RUNTIME)"}),
    ):
        show_default(parser.add_argument(option, **kwargs), _default(name))
    parser.add_argument(
        "--no-streams", action="store_true", help="gRPC only: do not consume Redis streams"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("port", "host", "metrics_port", "redis_url", "runtime"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "no_streams", False):
        out["streams"] = False
    return out


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM / SIGINT; exit 0 after a clean drain, 1 after an unclean one or
    a failed start, 70 (:data:`EXIT_UNHEALTHY`) after a fatal supervisor verdict."""
    from services.inference.config import InferenceSettings

    if args.check_config:
        check_config_and_exit(InferenceSettings, **_overrides(args))
    try:
        settings = InferenceSettings.load(**_overrides(args))
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    setup_logging(settings.log_level, fmt=settings.log_format, service="inference")

    from facemask.model.registry import RegistryError
    from facemask.model.store import ModelStoreError
    from services.inference.models import ModelLoadError
    from services.inference.service import InferenceService

    stop = stop_on_signals(logger)
    service = InferenceService(settings)
    try:
        service.start()
    except (ModelStoreError, RegistryError, ModelLoadError) as exc:
        logger.error("cannot load the model: %s", exc)
        service.stop()
        return 1
    except Exception:
        logger.exception("inference service failed to start")
        service.stop()
        return 1
    return serve(service, stop)


def serve(service: InferenceService, stop: threading.Event) -> int:
    """Serve until ``stop`` (a signal) or a fatal supervisor verdict; the exit code (0 clean
    drain, 1 unclean, 70 unhealthy: :func:`facemask.infra.lifecycle.serve_supervised`)."""
    return serve_supervised(service.supervisor, stop, service.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.inference``."""
    return module_main(
        "python -m services.inference", __doc__, configure, run, argv, examples=EXAMPLES
    )


if __name__ == "__main__":
    sys.exit(main())
