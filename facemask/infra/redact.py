"""Passwords out of what the project logs: ``redis://:s3cret@host`` -> ``redis://:***@host``.

:func:`redact_url` masks the password of one URL (user name, host, path kept);
:func:`redact_text` every ``scheme://user:password@`` inside free text (error messages,
command lines); :class:`RedactingFilter` applies it to every log record - its message and
its string ``extra`` fields - and is installed by :func:`facemask.infra.log.setup_logging`.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://[user]:password@ - the password runs to the last "@" before the host part
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s/]*)@")


def redact_url(url: str) -> str:
    """``url`` with the password of its user info masked (unchanged without one)."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with the password masked."""
    if "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)


class RedactingFilter(logging.Filter):
    """Masks URL passwords in a record's message and its string ``extra`` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in ("msg", "message") and "://" in value:
                setattr(record, key, redact_text(value))
        return True
