"""The runtime registry, and that the light modules never import TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from facemask.model.runtime import available_runtimes, create_runtime, register_runtime
from facemask.model.runtime.base import Runtime, check_batch, native_bf16, resolve_precision


class _Echo:
    name = "echo-test"
    input_size = (260, 260)
    max_batch_size: int | None = 4

    def __init__(self, *, model_path: object = None, scale: float = 1.0) -> None:
        self.scale = scale
        self.closed = False

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        return np.full((n, 5972, 4), self.scale, np.float32), np.zeros((n, 5972, 2), np.float32)

    def close(self) -> None:
        self.closed = True


def test_builtin_runtimes_listed() -> None:
    assert {"tensorflow", "tflite"} <= set(available_runtimes())


def test_register_and_create() -> None:
    register_runtime("echo-test")(_Echo)
    runtime = create_runtime("echo-test", scale=2.0)
    assert isinstance(runtime, _Echo) and runtime.scale == 2.0
    assert isinstance(runtime, Runtime)  # satisfies the protocol
    assert "echo-test" in available_runtimes()


def test_unknown_runtime() -> None:
    with pytest.raises(ValueError, match=r"unknown runtime 'nope'.*tensorflow"):
        create_runtime("nope")


def test_check_batch() -> None:
    out = check_batch(np.zeros((2, 260, 260, 3), np.float64), (260, 260))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    with pytest.raises(ValueError, match="expected a batch"):
        check_batch(np.zeros((260, 260, 3), np.float32), (260, 260))
    with pytest.raises(ValueError):
        check_batch(np.zeros((1, 300, 300, 3), np.float32), (260, 260))


def test_light_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import facemask.core, facemask.model.detector, facemask.cli, facemask.core.annotate\n"
        "import facemask.model.runtime, facemask.cli.detect\n"
        "facemask.cli.build_parser()\n"
        "heavy = sorted(m for m in ('tensorflow', 'ai_edge_litert') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_precision_auto_picks_bf16_only_on_native_bf16_cpus() -> None:
    assert native_bf16(frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert native_bf16(frozenset({"avx512_bf16"}))
    assert not native_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert resolve_precision("auto", frozenset({"amx_bf16"})) == "bf16"
    assert resolve_precision("auto", frozenset({"avx2"})) == "float32"
    assert resolve_precision("auto", frozenset()) == "float32"  # not Linux: no flags
    assert resolve_precision("float32", frozenset({"amx_bf16"})) == "float32"
    assert resolve_precision("bf16", frozenset()) == "bf16"  # asked for: emulated, slow
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp16")
