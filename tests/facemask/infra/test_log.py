"""The one logging setup: levels checked, structured fields in JSON and in text."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from facemask.infra.log import JsonFormatter, TextFormatter, check_level, extras, text_value


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "facemask.test", logging.WARNING, __file__, 1, "camera failed", None, None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({}, ""),
        (
            {"camera_id": "door", "url": "rtsp://cam/1", "error": "timed out"},
            ' camera_id=door url=rtsp://cam/1 error="timed out"',
        ),
        ({"retry_in_s": 1.5, "failures": 3}, " retry_in_s=1.5 failures=3"),
        ({"label": ""}, ' label=""'),
        ({"error": 'said "no"'}, ' error="said \\"no\\""'),
        ({"error": "line one\nline two"}, ' error="line one\\nline two"'),
        ({"path": "C:\\x"}, ' path="C:\\\\x"'),
        ({"url": "http://h/s?a=1"}, ' url="http://h/s?a=1"'),
        ({"label": "Café"}, " label=Café"),
        ({"ok": True, "none": None}, " ok=true none=null"),
        ({"cameras": ["cam1", "cam2"]}, ' cameras=["cam1","cam2"]'),
        ({"cameras": ("cam1",)}, ' cameras=["cam1"]'),
        ({"problems": {"redis": "false"}}, ' problems={"redis":"false"}'),
        ({"names": ["Camera 1"]}, ' names="[\\"Camera 1\\"]"'),
        ({"where": Path("/tmp/a b")}, ' where="/tmp/a b"'),
        ({"url": "rtsp://admin:hunter2@cam/1"}, " url=rtsp://admin:***@cam/1"),
        ({"sources": ["rtsp://admin:hunter2@cam/1"]}, ' sources=["rtsp://admin:***@cam/1"]'),
        ({"cfg": {"url": "redis://:hunter2@r:6379/0"}}, ' cfg={"url":"redis://:***@r:6379/0"}'),
    ],
)
def test_text_logs_show_the_structured_fields(extra: dict[str, object], fields: str) -> None:
    text = TextFormatter().format(record(**extra))
    assert text == "WARNING facemask.test: camera failed" + fields


def test_a_traceback_stays_below_the_fields() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = record(camera_id="door")
        rec.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(rec).splitlines()
    assert first == "WARNING facemask.test: camera failed camera_id=door"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "RuntimeError: boom"


def test_json_logs_keep_the_same_fields_passwords_masked() -> None:
    rec = record(camera_id="door", retry_in_s=1.5, sources=("rtsp://u:hunter2@cam/1",))
    doc = json.loads(JsonFormatter("ingest").format(rec))
    assert (doc["level"], doc["msg"], doc["service"]) == ("warning", "camera failed", "ingest")
    assert (doc["camera_id"], doc["retry_in_s"]) == ("door", 1.5)
    assert doc["sources"] == ["rtsp://u:***@cam/1"]
    assert extras(rec) == {k: v for k, v in doc.items() if k in extras(rec)}


@pytest.mark.parametrize(
    ("value", "shown"),
    [("plain", "plain"), ("", '""'), (3, "3"), (0.25, "0.25"), (False, "false"), ([], "[]")],
)
def test_text_value(value: object, shown: str) -> None:
    assert text_value(value) == shown


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
