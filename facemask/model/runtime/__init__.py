"""Inference runtimes behind one small registry.

A runtime module registers a factory with :func:`register_runtime`; :func:`create_runtime`
imports the module of a known runtime on first use, so TensorFlow is loaded only when the
``tensorflow`` runtime is created, never by ``import facemask.model.runtime``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from facemask.model.runtime.base import Runtime

__all__ = ["Runtime", "available_runtimes", "create_runtime", "register_runtime"]

Factory = Callable[..., Runtime]
F = TypeVar("F", bound=Factory)

_FACTORIES: dict[str, Factory] = {}
# Built-in runtimes: name -> module that registers it when imported.
_BUILTIN_MODULES: dict[str, str] = {
    "tensorflow": "facemask.model.runtime.tensorflow",
    "tflite": "facemask.model.runtime.tflite",
}


def register_runtime(name: str) -> Callable[[F], F]:
    """Class or function decorator registering a runtime factory under ``name``."""

    def decorator(factory: F) -> F:
        _FACTORIES[name] = factory
        return factory

    return decorator


def available_runtimes() -> list[str]:
    """Names :func:`create_runtime` accepts (built-in and registered), sorted."""
    return sorted(set(_FACTORIES) | set(_BUILTIN_MODULES))


def create_runtime(name: str, **options: Any) -> Runtime:
    """Create the runtime ``name`` with its options (``model_path``, threads, ...).

    Raises ``ValueError`` for an unknown name and ``ImportError`` (with the package to
    install) when the runtime's library is missing.
    """
    if name not in _FACTORIES and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown runtime {name!r}; available: {', '.join(available_runtimes())}"
        ) from None
    return factory(**options)
