"""Voice prompt: own cameras only, rate-limited, missing player warns once."""

from __future__ import annotations

import logging
import shutil
import stat
import time
import uuid
import wave
from pathlib import Path

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import AlertEvent
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.ingest import voice
from services.ingest.voice import build_command, ensure_default_clip, write_chime
from tests.services.ingest.conftest import fast_settings, running

LAYOUT = StreamLayout()


def alert(client: redis.Redis, camera: str, *, age: float = 0.0) -> None:
    event = AlertEvent(uuid.uuid4().hex, camera, time.time() - age, 1, message="no mask")
    client.xadd(LAYOUT.alerts, event.to_fields())  # type: ignore[arg-type]


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A player that appends its arguments to a log file."""
    log = tmp_path / "played.log"
    script = tmp_path / "player.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def played(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow
def test_prompt_plays_for_own_cameras_rate_limited(
    redis_server: RedisProcess, redis_client: redis.Redis, samples: Path, tmp_path: Path
) -> None:
    script, log = recorder(tmp_path)
    wav = write_chime(tmp_path / "prompt.wav")
    alert(redis_client, "lobby")  # before the node starts: never played
    settings = fast_settings(
        redis_server.url,
        [f"id=lobby,source={samples},fps=1,max_side=64", f"id=door,source={samples},fps=1"],
        voice_enabled=True,
        voice_command=f"{script} --device test {{wav}}",
        voice_wav=str(wav),
        voice_min_interval=1.5,
    )
    with running(settings) as worker:
        assert worker.voice is not None
        time.sleep(0.5)  # the reader has taken its start position
        alert(redis_client, "street")  # another node's camera
        alert(redis_client, "lobby")
        wait_until(lambda: len(played(log)) == 1, 5)
        assert played(log) == [f"--device test {wav}"]
        alert(redis_client, "lobby")  # within the rate limit
        alert(redis_client, "lobby", age=60)  # stale
        alert(redis_client, "door")  # its own limit
        wait_until(lambda: len(played(log)) == 2, 5)
        time.sleep(0.5)
        assert len(played(log)) == 2
        time.sleep(1.2)  # past the 1.5 s limit of lobby
        alert(redis_client, "lobby")
        wait_until(lambda: len(played(log)) == 3, 5)
        time.sleep(0.3)
        outcomes = {
            (cam, out): worker.metrics.value(
                "facemask_ingest_voice_prompts_total", {"camera_id": cam, "outcome": out}
            )
            for cam in ("lobby", "door", "street")
            for out in ("played", "rate_limited", "stale", "busy", "failed")
        }
    assert outcomes[("lobby", "played")] == 2
    assert outcomes[("lobby", "rate_limited")] == 1
    assert outcomes[("lobby", "stale")] == 1
    assert outcomes[("door", "played")] == 1
    assert not any(v for (cam, _), v in outcomes.items() if cam == "street")
    assert len(played(log)) == 3


def test_missing_player_warns_once(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    samples: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = fast_settings(
        redis_server.url,
        [f"id=lobby,source={samples},fps=1,max_side=64"],
        voice_enabled=True,
        voice_command="/nonexistent/player-xyz -q",
        voice_wav=str(write_chime(tmp_path / "prompt.wav")),
        voice_min_interval=0,
    )
    caplog.set_level(logging.WARNING, logger="services.ingest.voice")
    with running(settings) as worker:
        time.sleep(0.5)
        for _ in range(3):
            alert(redis_client, "lobby")
            time.sleep(0.3)
        wait_until(
            lambda: (
                worker.metrics.value(
                    "facemask_ingest_voice_prompts_total",
                    {"camera_id": "lobby", "outcome": "failed"},
                )
                == 3
            ),
            5,
        )
        assert not worker.stopping
    warnings = [r for r in caplog.records if r.name == "services.ingest.voice"]
    assert len(warnings) == 1 and "not found" in warnings[0].getMessage()


def test_default_clip_speech_or_chime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("espeak-ng"):
        clip = ensure_default_clip(tmp_path / "speech")
        assert clip.name == voice.SPEECH_CLIP
        with wave.open(str(clip)) as w:
            assert w.getnframes() / w.getframerate() > 0.5
        assert ensure_default_clip(tmp_path / "speech") == clip  # cached
    monkeypatch.setattr(voice.shutil, "which", lambda _name: None)  # no espeak-ng
    clip = ensure_default_clip(tmp_path / "nospeech")
    assert clip.name == voice.CHIME_CLIP
    with wave.open(str(clip)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        assert 0.4 < w.getnframes() / w.getframerate() < 0.6


def test_build_command() -> None:
    assert build_command("aplay -q", "/x/a.wav") == ["aplay", "-q", "/x/a.wav"]
    assert build_command("paplay '{wav}' --volume 5", "/x/a b.wav") == [
        "paplay",
        "/x/a b.wav",
        "--volume",
        "5",
    ]
    with pytest.raises(ValueError):
        build_command("  ", "/x")
