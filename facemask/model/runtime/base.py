"""The interface every inference runtime implements."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@runtime_checkable
class Runtime(Protocol):
    """Runs the model on a pre-processed batch.

    ``infer`` takes float32 ``[B, H, W, 3]`` (RGB in ``[0, 1]``; ``input_size`` is
    ``(W, H)``, read from the model file: 260x260 upstream) and returns the raw outputs
    ``loc [B, A, 4]`` and ``cls [B, A, 2]`` as float32 numpy arrays (``A`` anchors at that
    size, ``facemask.core.anchors.num_anchors``: 5972 at 260x260). A
    runtime is used from one thread at a time. ``max_batch_size`` is the largest batch one
    ``infer`` call accepts (None: any).
    """

    name: str
    input_size: tuple[int, int]
    max_batch_size: int | None

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs of a batch."""
        ...

    def close(self) -> None:
        """Release the model; the runtime is unusable afterwards."""
        ...


class RuntimeConfig(BaseModel):
    """The typed options of one runtime: the plugin contract (as Frigate's detectors).

    A runtime module defines a subclass with ``type: Literal["<name>"]``, its own fields
    and :meth:`create`; :mod:`facemask.model.runtime` discovers the subclasses and
    validates options against their discriminated union, so a misspelt or misplaced
    option is a clear error before any model is loaded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    model_path: Path | None = Field(None, description="model file (default: the cached one)")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: usable CPUs)")

    def create(self) -> Runtime:
        """The runtime these options describe (imports its framework now)."""
        raise NotImplementedError


def check_batch(batch: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Validate a model input batch; return it as C-contiguous float32."""
    width, height = input_size
    if batch.ndim != 4 or batch.shape[1:] != (height, width, 3):
        raise ValueError(f"expected a batch [B, {height}, {width}, 3], got {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


PRECISIONS = ("float32", "bf16")
"""Compute precisions of the TensorFlow runtime; ``auto`` resolves to one of them."""
_NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), so that
    TensorFlow's oneDNN bf16 path is faster than float32 rather than emulated."""
    return bool((cpu_flags() if flags is None else flags) & _NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, flags: frozenset[str] | None = None) -> str:
    """``float32`` / ``bf16`` as given; ``auto``: bf16 where the CPU has native bf16, else
    float32. Raises ``ValueError`` on anything else."""
    if precision == "auto":
        return "bf16" if native_bf16(flags) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected auto, float32 or bf16")
    return precision
