"""The one logging setup: levels checked, structured fields in JSON and in text."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from facemask.infra.log import JsonFormatter, TextFormatter, check_level


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "facemask.test", logging.WARNING, __file__, 1, "camera failed", None, None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_text_logs_keep_the_structured_fields() -> None:
    text = TextFormatter().format(record(camera_id="door", url="rtsp://cam/1", error="timed out"))
    assert text == (
        "WARNING facemask.test: camera failed camera_id=door url=rtsp://cam/1 error='timed out'"
    )
    assert TextFormatter().format(record()) == "WARNING facemask.test: camera failed"


def test_json_logs_keep_the_structured_fields() -> None:
    doc = json.loads(JsonFormatter("ingest").format(record(camera_id="door", retry_in_s=1.5)))
    assert (doc["level"], doc["msg"], doc["service"]) == ("warning", "camera failed", "ingest")
    assert (doc["camera_id"], doc["retry_in_s"]) == ("door", 1.5)


@pytest.mark.parametrize(("level", "expected"), [("debug", "DEBUG"), ("INFO", "INFO"), (10, 10)])
def test_levels(level: str | int, expected: str | int) -> None:
    assert check_level(level) == expected


def test_a_wrong_level_is_one_clear_error_not_a_traceback() -> None:
    with pytest.raises(ValueError, match="expected one of DEBUG"):
        check_level("verbose")
    result = subprocess.run(
        [sys.executable, "-m", "facemask", "--log-level", "verbose", "models", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid log level 'verbose'" in result.stderr
    assert "Traceback" not in result.stderr
