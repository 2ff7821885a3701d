"""Plugin discovery, shared by the model runtimes and the alert sinks.

A plugin is a pydantic config class with ``type: Literal["<name>"]`` (as Frigate's
detectors). :func:`discover` imports every module of the package that holds the built-in
plugins, then returns each subclass of the base config by its ``type``: a plugin defined
elsewhere joins by subclassing the base in a module imported before use.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any, TypeVar, cast

T = TypeVar("T", bound=type[Any])


@functools.cache
def _import_package_modules(package: str) -> None:
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def discover(base: T, package: str) -> dict[str, T]:
    """Every subclass of ``base`` whose ``type`` field has a string default, by that name,
    after importing the modules of ``package`` (once per process)."""
    _import_package_modules(package)
    found: dict[str, T] = {}
    for cls in _subclasses(base):
        name = cls.model_fields["type"].default
        if isinstance(name, str):
            found[name] = cast(T, cls)
    return found
