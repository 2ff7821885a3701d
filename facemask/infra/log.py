"""One structured logging setup for every service and the CLI.

Services log one JSON object per line on stderr (``FACEMASK_LOG_FORMAT=json``, the default
for services); the CLI defaults to a short human format. Modules use
``logging.getLogger(__name__)`` and pass structured fields with ``extra={...}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: ts, level, logger, msg, extra fields, exc."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            payload["service"] = self.service
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(
    level: str | int | None = None, *, fmt: str | None = None, service: str | None = None
) -> None:
    """Configure the root logger once (idempotent: replaces earlier handlers).

    ``level`` defaults to ``FACEMASK_LOG_LEVEL`` (INFO); ``fmt`` to ``FACEMASK_LOG_FORMAT``
    (``json`` for services, ``text`` for the CLI when unset).
    """
    level = level or os.environ.get("FACEMASK_LOG_LEVEL", "INFO")
    fmt = (fmt or os.environ.get("FACEMASK_LOG_FORMAT") or ("json" if service else "text")).lower()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("urllib3", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
