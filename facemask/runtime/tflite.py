"""TFLite runtime: the upstream ``.tflite`` on LiteRT (``ai-edge-litert``) with XNNPACK.

The model hard-codes batch 1, so a batch of N runs as N invocations. No TensorFlow needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from facemask import modelstore
from facemask.runtime import register_runtime
from facemask.runtime.base import check_batch, usable_cpus

logger = logging.getLogger(__name__)

MODEL_FILE = "face_mask_detection.tflite"
LOC_NAME = "loc_branch_concat_1/concat"
CLS_NAME = "cls_branch_concat_1/concat"


def _load_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the tflite runtime needs LiteRT: pip install ai-edge-litert") from exc
    return Interpreter


@register_runtime("tflite")
class TFLiteRuntime:
    """The ``.tflite`` model on LiteRT's XNNPACK CPU delegate.

    Options: ``model_path`` (default: the cached artifact), ``num_threads`` (alias
    ``threads``; default: the CPUs this process may use).
    """

    name = "tflite"
    input_size: tuple[int, int] = (260, 260)
    max_batch_size: int | None = None

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        num_threads: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else modelstore.artifact_path(MODEL_FILE)
        interpreter_class = _load_interpreter_class()
        self.num_threads = num_threads or threads or usable_cpus()
        self._interpreter: Any = interpreter_class(
            model_path=str(self.model_path), num_threads=self.num_threads
        )
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        self._input_index = int(inp["index"])
        outputs = {d["name"]: int(d["index"]) for d in self._interpreter.get_output_details()}
        try:
            self._loc_index, self._cls_index = outputs[LOC_NAME], outputs[CLS_NAME]
        except KeyError:
            raise ValueError(
                f"{self.model_path}: outputs {sorted(outputs)} are not the face-mask model's"
            ) from None
        _, height, width, _ = (int(d) for d in inp["shape"])
        self.input_size = (width, height)
        logger.debug("loaded %s (threads=%d)", self.model_path, self.num_threads)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs ``loc [B, 5972, 4]``, ``cls [B, 5972, 2]``; one invoke per image."""
        if self._interpreter is None:
            raise RuntimeError("runtime is closed")
        batch = check_batch(batch, self.input_size)
        locs, clss = [], []
        for i in range(len(batch)):
            self._interpreter.set_tensor(self._input_index, batch[i : i + 1])
            self._interpreter.invoke()
            locs.append(self._interpreter.get_tensor(self._loc_index))
            clss.append(self._interpreter.get_tensor(self._cls_index))
        if not locs:
            return _empty_output(self._interpreter, self._loc_index, self._cls_index)
        return np.concatenate(locs), np.concatenate(clss)

    def close(self) -> None:
        """Drop the interpreter."""
        self._interpreter = None


def _empty_output(
    interpreter: Any, loc_index: int, cls_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of an empty batch: ``[0, N, 4]`` and ``[0, N, 2]``."""
    details = {d["index"]: d["shape"] for d in interpreter.get_output_details()}
    return (
        np.empty((0, *details[loc_index][1:]), dtype=np.float32),
        np.empty((0, *details[cls_index][1:]), dtype=np.float32),
    )
