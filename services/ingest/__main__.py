"""``facemask ingest`` / ``python -m services.ingest``: run an ingest node.

Cameras and settings come from ``--camera`` options, a ``--config`` file (TOML or JSON;
``deploy/examples/ingest.toml`` documents every setting) and ``FACEMASK_INGEST_*``
variables (:mod:`services.ingest.config`).

Exit codes: 0 after SIGTERM / SIGINT (or when every non-looping file has ended), 2 for a
configuration error (also a stream layout that differs from the one in Redis), 1 for an
unexpected failure. Importing this module loads neither TensorFlow nor gRPC.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from facemask.infra.helpformat import show_default
from facemask.infra.lifecycle import module_main
from facemask.infra.log import setup_logging
from facemask.infra.settings import ConfigError, check_config_and_exit, setting_default

logger = logging.getLogger(__name__)

HELP = "run an ingest node (cameras to Redis Streams)"
EXAMPLE_CONFIG = "deploy/examples/ingest.toml"
"""The example settings file, every setting documented (validated by the tests)."""
EXAMPLES = (
    "facemask ingest --camera id=lobby,source=rtsp://cam1/stream,fps=5,location=hall",
    "facemask ingest --camera id=demo,source=clip.mp4,loop=true --camera id=door,source=0",
    f"# a settings file: {EXAMPLE_CONFIG} documents every setting; check it and exit",
    f"facemask ingest --config {EXAMPLE_CONFIG} --check-config",
)


def _default(name: str) -> Callable[[], Any]:
    """The default of setting ``name``, for ``--help`` (imports the settings only then)."""

    def default() -> Any:
        from services.ingest.config import IngestSettings

        return setting_default(IngestSettings, name)

    return default


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``ingest`` options."""
    parser.add_argument(
        "--camera",
        action="append",
        metavar="SPEC",
        help="a camera: id=ID,source=SRC[,fps=5,name=..,location=..,max_side=..,quality=80,"
        "loop=false,realtime=true] (repeatable; SRC: device index, rtsp/http URL, video file "
        "or image directory)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"settings file: TOML when named *.toml, else JSON (any setting by its name; "
        f"{EXAMPLE_CONFIG} documents them all)",
    )
    for option, name, kwargs in (
        ("--redis-url", "redis_url", {"help": "Redis URL (FACEMASK_INGEST_REDIS_URL)"}),
        (
            "--metrics-port",
            "metrics_port",
            {"type": int, "help": "Prometheus port, 0: none (FACEMASK_INGEST_METRICS_PORT)"},
        ),
        (
            "--node-name",
            "node_name",
            {"help": "name of this node: the hostname unless set (FACEMASK_INGEST_NODE_NAME)"},
        ),
        (
            "--voice",
            "voice_enabled",
            {
                "action": "store_true",
                "default": None,
                "help": "enable the voice prompt (FACEMASK_INGEST_VOICE_ENABLED)",
            },
        ),
    ):
        show_default(parser.add_argument(option, **kwargs), _default(name))
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it and exit (0: valid, 2: invalid)",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line and in ``--config`` (command line wins)."""
    from services.ingest.config import parse_camera_spec, read_config_file

    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_config_file(args.config))
    if getattr(args, "camera", None):
        values["cameras"] = [parse_camera_spec(spec) for spec in args.camera]
    for option, name in (
        ("redis_url", "redis_url"),
        ("metrics_port", "metrics_port"),
        ("node_name", "node_name"),
        ("voice", "voice_enabled"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            values[name] = value
    return values


def run(args: argparse.Namespace) -> int:
    """Validate the configuration and run the node until SIGTERM."""
    from services.ingest.config import IngestSettings
    from services.ingest.worker import IngestWorker

    try:
        overrides = overrides_from_args(args)
        if getattr(args, "check_config", False):
            check_config_and_exit(IngestSettings, **overrides)
        settings = IngestSettings.load(**overrides)
    except ConfigError as exc:
        sys.stderr.write(f"facemask ingest: configuration error: {exc}\n")
        return 2
    setup_logging(
        getattr(args, "log_level", None) or settings.log_level,
        fmt=settings.log_format,
        service="ingest",
    )
    return IngestWorker(settings).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.ingest``."""
    return module_main(
        "python -m services.ingest", __doc__, configure, run, argv, examples=EXAMPLES
    )


if __name__ == "__main__":
    sys.exit(main())
