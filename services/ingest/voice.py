"""Voice prompt: play a sound when an alert for one of the node's cameras arrives.

The node reads the alerts stream (``StreamLayout.alerts``) with plain ``XREAD`` - no
consumer group, every node sees every alert and keeps those of its own cameras. Per camera
the prompt plays at most once per ``min_interval`` seconds; alerts older than ``max_age``
(for example those that piled up while Redis was unreachable) are ignored; one sound
plays at a time (an alert arriving meanwhile is skipped, not queued). The player (e.g.
``aplay -q``; ``{wav}`` in the command is replaced by the WAV path, else the path is
appended) runs in a thread with a time limit; a missing player logs one warning.

The default clip is generated once into a cache directory: "Please wear a mask." spoken by
``espeak-ng`` when it is installed, else a short two-tone chime synthesised here, so a
node without espeak-ng still has a sound and nothing breaks.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import AlertEvent, WireError
from facemask.infra.backoff import Backoff
from facemask.infra.redisconn import CONNECTION_ERRORS, RedisClient
from services.ingest.metrics import IngestMetrics

logger = logging.getLogger(__name__)

PROMPT_TEXT = "Please wear a mask."
SPEECH_CLIP = "please_wear_a_mask.wav"
CHIME_CLIP = "chime.wav"
READ_BLOCK_MS = 1000
READ_COUNT = 100


def cache_dir(configured: str = "") -> Path:
    """Where generated clips go: the setting, else ``$XDG_CACHE_HOME/facemask/voice``
    (``~/.cache``), else a per-user temporary directory."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facemask" / "voice"


def write_chime(path: Path, *, rate: int = 16000) -> Path:
    """A 0.5 s two-tone chime (16-bit mono PCM WAV), made without any external tool."""
    samples = bytearray()
    for freq, duration in ((880.0, 0.22), (660.0, 0.28)):
        count = int(rate * duration)
        for i in range(count):
            fade = min(1.0, i / (0.01 * rate), (count - i) / (0.03 * rate))
            value = 0.4 * fade * math.sin(2 * math.pi * freq * i / rate)
            samples += struct.pack("<h", int(value * 32767))
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(samples))
    tmp.replace(path)
    return path


def _speak(path: Path, timeout: float = 20.0) -> bool:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return False
    tmp = path.with_suffix(".tmp")
    try:
        subprocess.run(
            [espeak, "-s", "150", "-w", str(tmp), PROMPT_TEXT],
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with wave.open(str(tmp), "rb") as clip:
            if clip.getnframes() == 0:
                return False
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError) as exc:
        logger.warning("espeak-ng could not make the voice clip", extra={"error": str(exc)})
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(path)
    return True


def ensure_default_clip(directory: str | Path = "") -> Path:
    """The default prompt WAV, generated on first use (speech, else a chime)."""
    candidates = [cache_dir(str(directory))]
    candidates.append(Path(tempfile.gettempdir()) / f"facemask-voice-{os.getuid()}")
    for folder in candidates:
        for name in (SPEECH_CLIP, CHIME_CLIP):
            if (folder / name).is_file() and (folder / name).stat().st_size > 44:
                return folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if _speak(folder / SPEECH_CLIP):
                return folder / SPEECH_CLIP
            return write_chime(folder / CHIME_CLIP)
        except OSError as exc:
            logger.warning(
                "cannot write the voice clip", extra={"dir": str(folder), "error": str(exc)}
            )
    raise OSError("no writable directory for the voice clip")


def build_command(command: str, wav: str | Path) -> list[str]:
    """The player argv: ``{wav}`` replaced, else the path appended."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("empty voice command")
    if any("{wav}" in part for part in argv):
        return [part.replace("{wav}", str(wav)) for part in argv]
    return [*argv, str(wav)]


class VoicePrompter:
    """Reads alerts, filters them to the node's cameras, rate-limits, plays the clip."""

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        camera_ids: Iterable[str],
        *,
        command: list[str],
        metrics: IngestMetrics,
        min_interval: float = 15.0,
        timeout: float = 10.0,
        max_age: float = 10.0,
        backoff_max: float = 10.0,
    ) -> None:
        self.client = client
        self.layout = layout
        self.cameras = frozenset(camera_ids)
        self.command = command
        self.metrics = metrics
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_age = max_age
        self.played = 0
        self._backoff = Backoff(0.5, backoff_max)
        self._last_played: dict[str, float] = {}
        self._player: threading.Thread | None = None
        self._warned_missing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voice", daemon=True)

    def start(self) -> None:
        """Start reading alerts (warns once at start when the player is not installed)."""
        if shutil.which(self.command[0]) is None:
            self._warned_missing = True
            logger.warning(
                "voice player not found; prompts stay silent until it is installed",
                extra={"command": self.command[0]},
            )
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (a sound still playing ends within its time limit)."""
        self._stop.set()
        self._thread.join(READ_BLOCK_MS / 1000 + 6.0)

    # -- alerts ------------------------------------------------------------------------
    def _initial_id(self) -> str:
        last: Any = self.client.xrevrange(self.layout.alerts, count=1)
        if not last:
            return "0-0"
        sid = last[0][0]
        return sid.decode() if isinstance(sid, bytes) else str(sid)

    def _run(self) -> None:
        last_id: str | None = None
        while not self._stop.is_set():
            try:
                if last_id is None:
                    last_id = self._initial_id()
                reply: Any = self.client.xread(
                    {self.layout.alerts: last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except CONNECTION_ERRORS as exc:
                delay = self._backoff.next()
                logger.debug("alerts not readable", extra={"error": str(exc), "retry_in_s": delay})
                self._stop.wait(delay)
                continue
            except Exception as exc:
                logger.warning("alerts read failed", extra={"error": str(exc)})
                self._stop.wait(self._backoff.next())
                continue
            self._backoff.reset()
            for _stream, entries in reply or []:
                for sid, fields in entries:
                    last_id = sid.decode() if isinstance(sid, bytes) else str(sid)
                    try:
                        event = AlertEvent.from_fields(fields)
                    except WireError as exc:
                        logger.debug("malformed alert ignored", extra={"reason": exc.reason})
                        continue
                    self.handle(event)

    def handle(self, event: AlertEvent) -> str | None:
        """Decide for one alert: ``play``, ``rate_limited``, ``busy`` or ``stale`` (None: not
        one of the node's cameras)."""
        camera = event.camera_id
        if camera not in self.cameras:
            return None
        outcome = self._decide(event)
        if outcome != "play":  # a started player counts itself: played or failed
            self.metrics.voice_prompts.labels(camera, outcome).inc()
        logger.debug("voice prompt decision", extra={"camera_id": camera, "outcome": outcome})
        return outcome

    def _decide(self, event: AlertEvent) -> str:
        if time.time() - event.ts > self.max_age:
            return "stale"
        now = time.monotonic()
        last = self._last_played.get(event.camera_id)
        if last is not None and now - last < self.min_interval:
            return "rate_limited"
        if self._player is not None and self._player.is_alive():
            return "busy"
        self._last_played[event.camera_id] = now
        self._player = threading.Thread(
            target=self._play, args=(event.camera_id,), name="voice-player", daemon=True
        )
        self._player.start()
        return "play"

    # -- player ------------------------------------------------------------------------
    def _play(self, camera_id: str) -> None:
        try:
            result = subprocess.run(
                self.command,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
            )
        except (FileNotFoundError, PermissionError) as exc:
            self.metrics.voice_prompts.labels(camera_id, "failed").inc()
            if not self._warned_missing:
                self._warned_missing = True
                logger.warning(
                    "voice player not available; prompts stay silent",
                    extra={"command": self.command[0], "error": str(exc)},
                )
            return
        except subprocess.TimeoutExpired:
            self.metrics.voice_prompts.labels(camera_id, "failed").inc()
            logger.warning("voice player timed out", extra={"timeout_s": self.timeout})
            return
        if result.returncode != 0:
            self.metrics.voice_prompts.labels(camera_id, "failed").inc()
            logger.warning(
                "voice player failed",
                extra={
                    "rc": result.returncode,
                    "stderr": result.stderr[-300:].decode("utf-8", "replace"),
                },
            )
            return
        self.played += 1
        self.metrics.voice_prompts.labels(camera_id, "played").inc()
        logger.info("voice prompt played", extra={"camera_id": camera_id})
