"""Base of every service's settings class (pydantic-settings).

Each service defines one subclass with its own environment prefix
(``FACEMASK_INFERENCE_``, ``FACEMASK_INGEST_``, ``FACEMASK_ALERTS_``). The settings every
service shares (Redis URL, stream layout, logging) may also be given once for all
services without the service part, e.g. ``FACEMASK_REDIS_URL``; the service-specific
variable wins. Unknown variables with the service's prefix are an error, so a typo
fails at start instead of being silently ignored.

All services share one environment (compose, Kubernetes), so a variable under another
service's prefix (:data:`SERVICE_PREFIXES`, and the prefix of every settings class
defined) is that service's business. Any other ``FACEMASK_*`` variable that is neither a
shared setting nor one of :data:`NON_SETTINGS_ENV` (read by tooling) is reported: an
error with a did-you-mean suggestion when it is close to a real setting name or service
prefix (``FACEMASK_REDIS_ULR``, ``FACEMASK_INFERNCE_PORT``), a warning otherwise.
A JSON-typed setting (``FACEMASK_INFERENCE_TILES``, ``FACEMASK_INGEST_CAMERAS``, ...) that
is not valid JSON of the right shape says that JSON is expected and shows an example.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import typing
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
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
from facemask.infra.metrics import DEFAULT_MAX_CAMERAS
from facemask.infra.redisconn import CLUSTER_SCHEME

logger = logging.getLogger(__name__)

GLOBAL_PREFIX = "FACEMASK_"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")
SERVICE_PREFIXES = ("FACEMASK_INFERENCE_", "FACEMASK_INGEST_", "FACEMASK_ALERTS_")
"""The services' own prefixes (each settings class defined adds its own too)."""
NON_SETTINGS_ENV = frozenset(
    {
        "FACEMASK_MODEL_DIR",
        "FACEMASK_MODEL_MIRROR",
        "FACEMASK_MODEL_MANIFEST",
        "FACEMASK_MODEL_STORE",
        "FACEMASK_VARIANT_CACHE_DIR",
        "FACEMASK_CALIBRATION_DIR",
        "FACEMASK_SHARED_DIR",
        "FACEMASK_SKIP_APT",
        "FACEMASK_EXTRAS",
        "FACEMASK_TAG",
        "FACEMASK_IMAGE_PREFIX",
        "FACEMASK_SCREENSHOTS",
    }
)
"""``FACEMASK_*`` variables read outside the settings classes (model store, setup, compose)."""
_SUGGEST_CUTOFF = 0.8


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
    max_cameras: int = Field(
        DEFAULT_MAX_CAMERAS,
        ge=1,
        le=100_000,
        description="distinct camera_id label values per metric (the rest are counted as "
        "_other); the alert service also lists at most this many cameras",
    )

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
    def known_env(cls) -> set[str]:
        """Every variable name that sets a field of this class (service and shared forms)."""
        prefix = cls.env_prefix().upper()
        names = {prefix + name.upper() for name in cls.model_fields}
        return names | {GLOBAL_PREFIX + name.upper() for name in cls.SHARED_FIELDS}

    @classmethod
    def stray_env(cls, environ: dict[str, str] | None = None) -> dict[str, str | None]:
        """``FACEMASK_*`` variables no service reads: name -> the likely intended name
        (None: nothing close; see the module docstring)."""
        env = os.environ if environ is None else environ
        prefixes = {p.upper() for p in SERVICE_PREFIXES} | {
            c.env_prefix().upper() for c in _SETTINGS_CLASSES if c.env_prefix() != GLOBAL_PREFIX
        }
        shared = {GLOBAL_PREFIX + name.upper() for name in cls.SHARED_FIELDS}
        candidates = sorted(set().union(*(c.known_env() for c in {cls, *_SETTINGS_CLASSES})))
        services = sorted(p[len(GLOBAL_PREFIX) : -1] for p in prefixes)
        out: dict[str, str | None] = {}
        for key in sorted(env):
            name = key.upper()
            if not name.startswith(GLOBAL_PREFIX) or name in shared or name in NON_SETTINGS_ENV:
                continue
            if any(name.startswith(p) for p in prefixes):
                continue
            head, _, rest = name[len(GLOBAL_PREFIX) :].partition("_")
            near = difflib.get_close_matches(head, services, n=1, cutoff=_SUGGEST_CUTOFF)
            if near and rest:  # a misspelt service prefix: FACEMASK_INFERNCE_PORT
                out[key] = f"{GLOBAL_PREFIX}{near[0]}_{rest}"
                continue
            close = difflib.get_close_matches(name, candidates, n=1, cutoff=_SUGGEST_CUTOFF)
            out[key] = close[0] if close else None
        return out

    @classmethod
    def _json_example(cls, name: str) -> str | None:
        """``, e.g. <example>`` text for a JSON-typed field (None: not JSON-typed)."""
        info = cls.model_fields.get(name)
        if info is None:
            return None
        annotation = info.annotation
        origin = typing.get_origin(annotation)
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if origin not in (dict, list, set, tuple, frozenset) and not is_model:
            return None
        if info.examples:
            return str(info.examples[0])
        return '{"name": "value"}' if origin is dict or is_model else '["value"]'

    @classmethod
    def _env_name(cls, name: str) -> str:
        return cls.env_prefix() + name.upper()

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read and validate the settings; raise :class:`ConfigError` with a clear message."""
        unknown = cls.unknown_env()
        if unknown:
            known = sorted(cls.env_prefix() + f.upper() for f in cls.model_fields)
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ConfigError(
                f"unknown setting(s) {', '.join(hints)}; valid names start with "
                f"{cls.env_prefix()} and are: "
                + ", ".join(sorted(f.upper() for f in cls.model_fields))
            )
        stray = cls.stray_env()
        typos = {k: v for k, v in stray.items() if v is not None}
        if typos:
            raise ConfigError(
                "unknown setting(s) "
                + ", ".join(f"{k} (did you mean {v}?)" for k, v in typos.items())
                + ": no service reads them"
            )
        for name in stray:
            logger.warning(
                "environment variable %s is no setting of any facemask service",
                name,
                extra={"variable": name},
            )
        try:
            return cls(**overrides)
        except SettingsError as exc:  # a variable that is not valid JSON for a complex field
            match = re.search(r'field "([^"]+)"', str(exc))
            field = match.group(1) if match else ""
            example = cls._json_example(field)
            if example is not None:
                raise ConfigError(
                    f"invalid configuration: {cls._env_name(field)}: expected JSON (setting "
                    f"'{field}' could not be parsed), e.g. {cls._env_name(field)}='{example}'"
                ) from None
            raise ConfigError(f"invalid configuration: {exc}") from None
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                top = where.split(".")[0]
                problem = f"{cls._env_name(top)}: {err['msg']}"
                example = cls._json_example(top)
                if example is not None and err["type"] in JSON_SHAPE_ERRORS:
                    problem += f" (expected JSON, e.g. {cls._env_name(top)}='{example}')"
                problems.append(problem)
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _SETTINGS_CLASSES.add(cls)

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


def setting_default(settings_cls: type[BaseModel], name: str) -> Any:
    """The default of the setting ``name`` of ``settings_cls`` (a default factory called):
    what a service's ``--help`` shows for the option that overrides it."""
    return settings_cls.model_fields[name].get_default(call_default_factory=True)


_SETTINGS_CLASSES: set[type[ServiceSettings]] = set()
"""Every settings class defined in this process (their names count as known)."""
JSON_SHAPE_ERRORS = frozenset(
    {"dict_type", "list_type", "model_type", "model_attributes_type", "set_type", "tuple_type"}
)


def check_config_and_exit(settings_cls: type[ServiceSettings], **overrides: Any) -> None:
    """``--check-config``: validate, print the effective settings, exit 0 / 2."""
    try:
        settings = settings_cls.load(**overrides)
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None
    sys.stdout.write(settings.describe() + "\nconfiguration OK\n")
    raise SystemExit(0)
