"""Base of every service's settings class (pydantic-settings).

Each service defines one subclass with its own environment prefix
(``FACEMASK_INFERENCE_``, ``FACEMASK_INGEST_``, ``FACEMASK_ALERTS_``). The settings every
service shares (Redis URL, stream layout, logging) may also be given once for all
services without the service part, e.g. ``FACEMASK_REDIS_URL``; the service-specific
variable wins. Unknown variables with the service's prefix are an error, so a typo
fails at start instead of being silently ignored.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from facemask.contracts.streams import StreamLayout
from facemask.infra.log import LEVELS, check_level
from facemask.infra.redisconn import CLUSTER_SCHEME

GLOBAL_PREFIX = "FACEMASK_"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class _GlobalEnvSource(EnvSettingsSource):
    """Reads only the shared fields, from ``FACEMASK_<FIELD>``."""

    def __init__(self, settings_cls: type[BaseSettings], shared: frozenset[str]) -> None:
        super().__init__(settings_cls, env_prefix=GLOBAL_PREFIX, case_sensitive=False)
        self._shared = shared

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self._shared:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class ServiceSettings(BaseSettings):
    """Settings shared by all services. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="FACEMASK_", extra="forbid")
    SHARED_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"redis_url", "stream_prefix", "stream_partitions", "log_level", "log_format"}
    )

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server URL")
    stream_prefix: str = Field("facemask", description="prefix of every Redis key")
    stream_partitions: int = Field(
        4, ge=1, le=1024, description="number of frame stream partitions (same on all services)"
    )
    log_level: str = Field("INFO", description="log level: " + ", ".join(LEVELS))
    log_format: str = Field("json", pattern="^(json|text)$", description="json or text logs")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port (0: none)")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return str(check_level(value))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if not sep or scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"{value.rsplit('@', maxsplit=1)[-1][:80]!r} is not a Redis URL: expected "
                + ", ".join(f"{s}://" for s in REDIS_SCHEMES)
            )
        if scheme != "unix" and not urlsplit(value.replace(CLUSTER_SCHEME, "redis://", 1)).hostname:
            raise ValueError("the Redis URL names no host")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _GlobalEnvSource(settings_cls, cls.SHARED_FIELDS),
            file_secret_settings,
        )

    @property
    def layout(self) -> StreamLayout:
        """The Redis key layout these settings describe."""
        return StreamLayout(self.stream_prefix, self.stream_partitions)

    @classmethod
    def env_prefix(cls) -> str:
        """This service's environment prefix."""
        return str(cls.model_config.get("env_prefix", GLOBAL_PREFIX))

    @classmethod
    def unknown_env(cls, environ: dict[str, str] | None = None) -> list[str]:
        """Variables that carry this service's prefix but name no setting."""
        prefix = cls.env_prefix().upper()
        if prefix == GLOBAL_PREFIX:
            return []
        known = {prefix + name.upper() for name in cls.model_fields}
        env = os.environ if environ is None else environ
        return sorted(k for k in env if k.upper().startswith(prefix) and k.upper() not in known)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read and validate the settings; raise :class:`ConfigError` with a clear message."""
        unknown = cls.unknown_env()
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; valid names start with "
                f"{cls.env_prefix()} and are: "
                + ", ".join(sorted(f.upper() for f in cls.model_fields))
            )
        try:
            return cls(**overrides)
        except SettingsError as exc:  # a variable that is not valid JSON for a complex field
            raise ConfigError(f"invalid configuration: {exc}") from None
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                env_name = cls.env_prefix() + where.split(".")[0].upper()
                problems.append(f"{env_name}: {err['msg']}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    def describe(self) -> str:
        """Human-readable dump of the effective settings (secrets masked)."""
        lines = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if any(s in name for s in ("token", "secret", "password")) and value:
                value = "***"
            if name == "redis_url" and isinstance(value, str) and "@" in value:
                value = value.split("://", 1)[0] + "://***@" + value.rsplit("@", 1)[1]
            lines.append(f"{self.env_prefix()}{name.upper()}={value}")
        return "\n".join(lines)


def check_config_and_exit(settings_cls: type[ServiceSettings], **overrides: Any) -> None:
    """``--check-config``: validate, print the effective settings, exit 0 / 2."""
    try:
        settings = settings_cls.load(**overrides)
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None
    sys.stdout.write(settings.describe() + "\nconfiguration OK\n")
    raise SystemExit(0)
