"""Inference runtimes as plugins: a config class plus its implementation.

Each module of this package defines a :class:`~facemask.model.runtime.base.RuntimeConfig`
subclass with ``type: Literal["<name>"]`` and typed options, whose ``create()`` builds the
runtime. :func:`runtime_configs` discovers them (importing a runtime module does not
import its framework: TensorFlow is loaded only when the ``tensorflow`` runtime is
created), and options are validated by the named runtime's config class
(:func:`parse_runtime_config`), so a wrong option fails before any model loads. A
runtime defined elsewhere joins by subclassing ``RuntimeConfig`` in a module imported
before use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from facemask.core.plugins import discover
from facemask.model.runtime.base import Runtime, RuntimeConfig

__all__ = [
    "Runtime",
    "RuntimeConfig",
    "available_runtimes",
    "create_runtime",
    "parse_runtime_config",
    "runtime_configs",
]


def runtime_configs() -> dict[str, type[RuntimeConfig]]:
    """Every runtime's config class by runtime name (built-in and defined elsewhere)."""
    return discover(RuntimeConfig, __name__)


def available_runtimes() -> list[str]:
    """Names :func:`create_runtime` accepts, sorted."""
    return sorted(runtime_configs())


def parse_runtime_config(options: Mapping[str, Any]) -> RuntimeConfig:
    """Validate ``{"type": name, **options}``; ``ValueError`` naming the bad option."""
    configs = runtime_configs()
    name = options.get("type")
    if name not in configs:
        raise ValueError(f"unknown runtime {name!r}; available: {', '.join(sorted(configs))}")
    try:
        config = configs[name].model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"invalid options for runtime {name!r}: {problems}") from None
    return config


def create_runtime(name: str, **options: Any) -> Runtime:
    """Create the runtime ``name`` with its options (``model_path``, threads, ...).

    Raises ``ValueError`` for an unknown name or option and ``ImportError`` (with the
    package to install) when the runtime's library is missing.
    """
    return parse_runtime_config({"type": name, **options}).create()
