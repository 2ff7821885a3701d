"""One structured logging setup for every service and the CLI.

Services log one JSON object per line on stderr (``FACEMASK_LOG_FORMAT=json``, the default
for services); the CLI (and ``facemask run``'s children) a short human format,
``LEVEL logger: message key=value ...``. Modules use ``logging.getLogger(__name__)`` and
pass structured fields with ``extra={...}``; both formats show them, built in one place
(:func:`extras`), URL passwords masked (:mod:`facemask.infra.redact`) even when a handler
lacks the :class:`~facemask.infra.redact.RedactingFilter`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

from facemask.infra.redact import RedactingFilter, redact_text

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
        payload.update(extras(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (what ``extra=`` gave it), URL passwords in
    strings masked (also inside lists, tuples and dicts)."""
    return {
        key: _redacted(value)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return value


_NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f]')


def text_value(value: Any) -> str:
    """A field value as the text format shows it: a string as it is, in double quotes
    (JSON escapes) when it is empty or holds whitespace, ``"``, ``=``, a backslash or a
    control character; numbers as Python prints them; booleans, None, lists and dicts as
    compact JSON (quoted as a whole when that holds whitespace); anything else as its
    ``str``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None or isinstance(value, list | dict):
        text = json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(text, ensure_ascii=False) if re.search(r"\s", text) else text
    else:
        text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...``: the human format, structured fields kept
    (:func:`text_value`), a traceback below them."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{key}={text_value(value)}" for key, value in extras(record).items()]
        if not fields:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback below the fields
        return f"{first} {' '.join(fields)}{newline}{rest}"


def check_level(level: str | int) -> str | int:
    """``level`` if it is a logging level (name in any case, or number); else a
    ``ValueError`` that names the valid ones."""
    if isinstance(level, int) or str(level).upper() in LEVELS:
        return level if isinstance(level, int) else str(level).upper()
    raise ValueError(
        f"invalid log level {level!r} (FACEMASK_LOG_LEVEL or --log-level): "
        f"expected one of {', '.join(LEVELS)}"
    )


LOG_LEVEL_HELP = "DEBUG, INFO, WARNING or ERROR (default: $FACEMASK_LOG_LEVEL, else INFO)"
"""Help of the ``--log-level`` option of the CLI and the services (see :func:`setup_logging`)."""


def setup_logging(
    level: str | int | None = None, *, fmt: str | None = None, service: str | None = None
) -> None:
    """Configure the root logger once (idempotent: replaces earlier handlers).

    ``level`` defaults to ``FACEMASK_LOG_LEVEL`` (INFO; ``ValueError`` when it is no level);
    ``fmt`` to ``FACEMASK_LOG_FORMAT`` (``json`` for services, ``text`` for the CLI when
    unset). Both formats carry the structured ``extra`` fields.
    """
    level = check_level(level or os.environ.get("FACEMASK_LOG_LEVEL", "INFO"))
    fmt = (fmt or os.environ.get("FACEMASK_LOG_FORMAT") or ("json" if service else "text")).lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # no URL password reaches a log line
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
