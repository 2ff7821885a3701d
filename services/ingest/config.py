"""Settings of an ingest node: ``FACEMASK_INGEST_*``, ``--camera`` specs or a config file.

Cameras come from (highest precedence first) repeated ``--camera`` options, a
``--config FILE`` (JSON, or TOML when the name ends in ``.toml``), or
``FACEMASK_INGEST_CAMERAS`` (a JSON list of objects or of ``--camera`` strings)::

    facemask ingest --camera id=lobby,source=rtsp://cam1/stream,fps=5,location=hall \\
                    --camera id=demo,source=/data/clip.mp4,loop=true,max_side=960

    FACEMASK_INGEST_CAMERAS='[{"id": "lobby", "source": "0", "fps": 5}]'

A config file holds any setting by its field name (``redis_url``, ``stream_maxlen``,
``cameras = [...]`` ...); ``deploy/examples/ingest.toml`` documents every one of them (a
test keeps it complete and valid). Precedence of the other settings: command line, then config
file, then ``FACEMASK_INGEST_<NAME>``, then ``FACEMASK_<NAME>`` for the shared ones.

Per-camera keys: ``id`` (required), ``source`` (required, see
:mod:`services.ingest.sources`), ``name``, ``location``, ``fps`` (default 5, frames between
are dropped at the source), ``max_side`` (0: keep the size; else the longer side is
scaled down to it), ``quality`` (JPEG, default 80), ``loop`` (video files: repeat;
default false for files, true for image slideshows), ``realtime`` (files: play at the
file's pace, default true; false reads as fast as the CPU allows).
"""

from __future__ import annotations

import json
import shlex
import socket
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import SettingsConfigDict, SettingsError

from facemask.contracts.wire import MAX_SIDE, WireError, validate_camera_id
from facemask.infra.settings import ConfigError, ServiceSettings
from facemask.infra.watchdog import SupervisionSettings
from services.ingest.sources import SourceSpec, parse_source

DEFAULT_FPS = 5.0
MAX_FPS = 60.0
DEFAULT_QUALITY = 80
# Per *partition* stream (cameras share partitions: crc32(id) % partitions). At about
# 40-60 KB per 960x540 / 1280x720 JPEG at quality 80 that is 40-60 MB of Redis memory per
# partition, 160-240 MB for the default 4 partitions: enough for ~50 s of backlog with 4
# cameras at 5 fps on one partition, while inference is down or catching up.
DEFAULT_STREAM_MAXLEN = 1000
# Frames held in memory while Redis is unreachable (all cameras of the node together):
# 10 s of 2 cameras at 5 fps, about 4-6 MB.
DEFAULT_BUFFER_FRAMES = 100


class CameraConfig(BaseModel):
    """One camera of the node (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    KEYS: ClassVar[tuple[str, ...]] = (
        "id",
        "source",
        "name",
        "location",
        "fps",
        "max_side",
        "quality",
        "loop",
        "realtime",
    )

    id: str = Field(
        description="camera id: 1..64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
    )
    source: str = Field(description="device index, URL, video file or image directory")
    name: str = Field("", description="display name (default: the id)")
    location: str = Field("", description="free-text location")
    fps: float = Field(DEFAULT_FPS, gt=0, le=MAX_FPS, description="frames per second kept")
    max_side: int = Field(0, ge=0, le=MAX_SIDE, description="scale down to this side (0: off)")
    quality: int = Field(DEFAULT_QUALITY, ge=1, le=100, description="JPEG quality")
    loop: bool | None = Field(None, description="repeat a video file / slideshow")
    realtime: bool = Field(True, description="play files at their own pace")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_camera_id(value)
        except WireError as exc:
            raise ValueError(exc.detail) from None

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        parse_source(value)
        return value.strip()

    @field_validator("max_side")
    @classmethod
    def _check_max_side(cls, value: int) -> int:
        if 0 < value < 16:
            raise ValueError("max_side must be 0 (keep the size) or at least 16")
        return value

    @property
    def spec(self) -> SourceSpec:
        """The parsed source."""
        return parse_source(self.source, check_exists=False)

    @property
    def display_name(self) -> str:
        """``name`` or the id."""
        return self.name or self.id

    @property
    def loops(self) -> bool:
        """Whether the source repeats at its end (kind default when ``loop`` is unset)."""
        if self.loop is not None:
            return self.loop
        return self.spec.kind == "images"

    def to_spec_string(self) -> str:
        """The camera as a ``--camera`` string, source password masked."""
        parts = [f"id={self.id}", f"source={self.spec.redacted}", f"fps={self.fps:g}"]
        for key in ("name", "location"):
            if getattr(self, key):
                parts.append(f"{key}={getattr(self, key)}")
        parts.append(f"max_side={self.max_side}")
        parts.append(f"quality={self.quality}")
        if self.spec.kind in ("file", "images"):
            parts.append(f"loop={str(self.loops).lower()}")
            parts.append(f"realtime={str(self.realtime).lower()}")
        return ",".join(parts)


def parse_camera_spec(text: str) -> dict[str, str]:
    """``id=lobby,source=rtsp://h/s?a=1,fps=5`` -> a dict of strings.

    Pairs are separated by commas and split at their first ``=``. A piece without ``=``
    continues the previous value, and so does an unknown ``key=value`` once the source URL
    has a query (``?a=1,b=2``): a URL may contain commas.
    """
    out: dict[str, str] = {}
    last: str | None = None
    for piece in text.split(","):
        key, sep, value = piece.partition("=")
        key = key.strip()
        in_query = last == "source" and "?" in out["source"] and key not in CameraConfig.KEYS
        if sep and key.isidentifier() and not in_query:
            if key not in CameraConfig.KEYS:
                raise ConfigError(
                    f"camera spec {text!r}: unknown key {key!r} "
                    f"(valid keys: {', '.join(CameraConfig.KEYS)})"
                )
            if key in out:
                raise ConfigError(f"camera spec {text!r}: key {key!r} given twice")
            out[key] = value.strip()
            last = key
        elif last is not None:
            out[last] += "," + piece
        elif piece.strip():
            raise ConfigError(f"camera spec {text!r}: expected key=value pairs, got {piece!r}")
    for required in ("id", "source"):
        if not out.get(required):
            raise ConfigError(f"camera spec {text!r}: {required}= is required")
    return out


def _problem(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("ingest_config", "{message}", {"message": message})


def _camera_problem(item: Any, index: int, exc: ValidationError) -> str:
    ident = item.get("id") if isinstance(item, dict) else None
    who = f"camera {ident!r}" if isinstance(ident, str) and ident else f"camera #{index + 1}"
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "camera"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (valid keys: {', '.join(CameraConfig.KEYS)})"
        elif "input" in err and err["type"] not in ("missing",) and where != "source":
            msg += f" (got {err['input']!r})"
        problems.append(msg if where == "source" else f"{where}: {msg}")
    return f"{who}: " + "; ".join(problems)


class IngestSettings(ServiceSettings, SupervisionSettings):
    """Settings of an ingest node (``FACEMASK_INGEST_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="FACEMASK_INGEST_", extra="forbid")

    cameras: list[CameraConfig] = Field(
        default_factory=list,
        validate_default=True,
        examples=['[{"id": "lobby", "source": "rtsp://cam1/stream", "fps": 5}]'],
        description="cameras of this node (JSON list)",
    )
    node_name: str = Field(
        default_factory=socket.gethostname, min_length=1, description="node name (hostname)"
    )
    stream_maxlen: int = Field(
        DEFAULT_STREAM_MAXLEN,
        ge=10,
        le=10_000_000,
        description="approximate MAXLEN of each partition frame stream (shared by its cameras)",
    )
    buffer_frames: int = Field(
        DEFAULT_BUFFER_FRAMES,
        ge=1,
        le=100_000,
        description="frames kept in memory while Redis is unreachable (oldest dropped)",
    )
    publish_batch: int = Field(16, ge=1, le=1000, description="XADDs per pipeline round trip")
    redis_backoff_initial: float = Field(0.5, gt=0, le=60, description="first reconnect delay")
    redis_backoff_max: float = Field(10.0, gt=0, le=600, description="reconnect delay cap")
    source_backoff_initial: float = Field(1.0, gt=0, le=60, description="first camera retry")
    source_backoff_max: float = Field(30.0, gt=0, le=3600, description="camera retry cap")
    heartbeat_interval: float = Field(5.0, ge=0.1, le=300, description="registry refresh (s)")
    camera_ttl: int = Field(30, ge=1, le=86400, description="registry entry TTL (s)")
    shutdown_timeout: float = Field(5.0, ge=0, le=300, description="flush deadline on SIGTERM")
    voice_enabled: bool = Field(False, description="play a prompt on alerts of own cameras")
    voice_command: str = Field(
        "aplay -q", min_length=1, description="player command; {wav} or appended WAV path"
    )
    voice_wav: str = Field("", description="WAV to play (empty: generated default clip)")
    voice_min_interval: float = Field(15.0, ge=0, le=86400, description="per-camera rate limit")
    voice_timeout: float = Field(10.0, gt=0, le=600, description="player time limit (s)")
    voice_max_age: float = Field(10.0, gt=0, le=3600, description="ignore older alerts (s)")
    voice_cache_dir: str = Field("", description="where the default clip is generated")

    @field_validator("cameras", mode="before")
    @classmethod
    def _parse_cameras(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        cameras: list[CameraConfig] = []
        for index, item in enumerate(value):
            if isinstance(item, CameraConfig):
                cameras.append(item)
                continue
            try:
                raw = parse_camera_spec(item) if isinstance(item, str) else item
            except ConfigError as exc:
                raise _problem(str(exc)) from None
            if not isinstance(raw, dict):
                raise _problem(f"camera #{index + 1} is not an object or a spec string")
            try:
                cameras.append(CameraConfig.model_validate(raw))
            except ValidationError as exc:
                raise _problem(_camera_problem(raw, index, exc)) from None
        return cameras

    @field_validator("cameras")
    @classmethod
    def _check_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        if not cameras:
            raise _problem(
                "no camera configured: give --camera id=...,source=... (repeatable), "
                "--config FILE or FACEMASK_INGEST_CAMERAS"
            )
        seen: set[str] = set()
        for camera in cameras:
            if camera.id in seen:
                raise _problem(f"camera id {camera.id!r} configured twice")
            seen.add(camera.id)
        return cameras

    @field_validator("camera_ttl")
    @classmethod
    def _check_ttl(cls, ttl: int, info: ValidationInfo) -> int:
        interval = info.data.get("heartbeat_interval")
        if interval is not None and ttl <= interval:
            raise _problem(
                f"camera_ttl ({ttl}s) must exceed heartbeat_interval ({interval}s) "
                "or cameras flap offline"
            )
        return ttl

    @field_validator("voice_command")
    @classmethod
    def _check_command(cls, command: str) -> str:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise _problem(f"voice_command {command!r}: {exc}") from None
        if not argv:
            raise _problem("voice_command is empty")
        return command

    @field_validator("voice_wav")
    @classmethod
    def _check_wav(cls, path: str) -> str:
        if path and not Path(path).is_file():
            raise _problem(f"voice_wav {path!r} is not a file")
        return path

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """:meth:`ServiceSettings.load`, with undecodable JSON variables as a ConfigError."""
        try:
            return super().load(**overrides)
        except SettingsError as exc:
            raise ConfigError(f"invalid configuration: {exc} (expected JSON)") from None
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid configuration: {exc}") from None

    def describe(self) -> str:
        """Effective settings; one line per camera, URL passwords masked."""
        lines = []
        for line in super().describe().splitlines():
            if line.startswith(f"{self.env_prefix()}CAMERAS="):
                continue
            lines.append(line)
        for camera in self.cameras:
            lines.append(f"camera {camera.to_spec_string()}")
        return "\n".join(lines)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or TOML file; unknown keys are a :class:`ConfigError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    is_toml = file.suffix.lower() == ".toml"
    try:
        data: Any = tomllib.loads(text) if is_toml else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if is_toml else "JSON"
        raise ConfigError(f"config file {file} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: expected an object / table of settings")
    unknown = sorted(k for k in data if k not in IngestSettings.model_fields)
    if unknown:
        raise ConfigError(
            f"config file {file}: unknown setting(s) {', '.join(unknown)}; valid: "
            + ", ".join(sorted(IngestSettings.model_fields))
        )
    return data
