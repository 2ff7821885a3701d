"""facemask.infra.redact: URL passwords never reach a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from facemask.infra.log import setup_logging
from facemask.infra.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://ingest:s3cret@10.0.0.1:6379/0", "redis://ingest:***@10.0.0.1:6379/0"),
        ("rediss://u:p%40ss@h/0?x=1#f", "rediss://u:***@h/0?x=1#f"),
        ("mqtt://facemask:pw@mosquitto:1883", "mqtt://facemask:***@mosquitto:1883"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),  # nothing to hide
        ("redis://user@redis:6379/0", "redis://user@redis:6379/0"),
        ("/var/run/redis.sock", "/var/run/redis.sock"),
        ("", ""),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert redact_text(url) == redacted


def test_redact_text_masks_every_url_in_free_text() -> None:
    text = (
        "cannot reach redis://:abc@r1:6379/0 nor rtsp://cam:pw@10.0.0.9/s; "
        "plain http://example.com:8080/x stays"
    )
    assert redact_text(text) == (
        "cannot reach redis://:***@r1:6379/0 nor rtsp://cam:***@10.0.0.9/s; "
        "plain http://example.com:8080/x stays"
    )


@pytest.fixture()
def root_logger() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.usefixtures("root_logger")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_carry_no_url_password(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    setup_logging("INFO", fmt=fmt, service="test" if fmt == "json" else None)
    log = logging.getLogger("facemask.test")
    log.info("connecting to %s", "redis://:topsecret@redis:6379/0")
    log.warning("redis unavailable", extra={"url": "redis://u:topsecret@h/0", "n": 3})
    text = capsys.readouterr().err
    assert "topsecret" not in text
    assert text.count("***@") == 2
    if fmt == "json":
        first, second = (json.loads(line) for line in text.splitlines())
        assert first["msg"] == "connecting to redis://:***@redis:6379/0"
        assert second["url"] == "redis://u:***@h/0" and second["n"] == 3
