"""The runtime registry, and that the light modules never import TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import numpy as np
import pytest

from facemask.model.runtime import (
    available_runtimes,
    create_runtime,
    parse_runtime_config,
    runtime_configs,
)
from facemask.model.runtime.base import (
    Runtime,
    RuntimeConfig,
    check_batch,
    native_bf16,
    resolve_precision,
)
from facemask.model.runtime.tensorflow import TensorFlowConfig
from facemask.model.runtime.tflite import TFLiteConfig


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


class _EchoConfig(RuntimeConfig):
    type: Literal["echo-test"] = "echo-test"
    scale: float = 1.0

    def create(self) -> _Echo:
        return _Echo(model_path=self.model_path, scale=self.scale)


def test_builtin_runtimes_discovered() -> None:
    assert {"tensorflow", "tflite"} <= set(available_runtimes())
    assert runtime_configs()["tensorflow"] is TensorFlowConfig
    assert runtime_configs()["tflite"] is TFLiteConfig


def test_a_plugin_is_a_config_class_and_its_runtime() -> None:
    runtime = create_runtime("echo-test", scale=2.0)
    assert isinstance(runtime, _Echo) and runtime.scale == 2.0
    assert isinstance(runtime, Runtime)  # satisfies the protocol
    assert "echo-test" in available_runtimes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "nope"}, r"unknown runtime 'nope'.*tensorflow"),
        ({"type": "tensorflow", "variant": "int8"}, r"'tensorflow'.*variant: Extra inputs"),
        ({"type": "tensorflow", "precision": "fp16"}, r"precision: Input should be"),
        ({"type": "tflite", "interpreters": 0}, r"interpreters: Input should be greater"),
        ({"type": "tflite", "threads": "many"}, r"threads: Input should be a valid integer"),
    ],
)
def test_wrong_options_fail_before_any_model_loads(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_runtime_config(options)


def test_options_are_typed() -> None:
    config = parse_runtime_config({"type": "tflite", "variant": "int8", "threads": "2"})
    assert isinstance(config, TFLiteConfig)
    assert (config.variant, config.threads, config.interpreters) == ("int8", 2, 1)


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
