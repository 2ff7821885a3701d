"""TFLite runtime: the face-mask model on LiteRT (``ai-edge-litert``) with XNNPACK.

The models hard-code batch 1, so a batch of N runs as N invocations, spread over
``interpreters`` interpreters on as many threads (LiteRT releases the GIL while it runs).
Variants: ``upstream`` (the upstream ``.tflite``), ``float32`` and ``int8`` (built from the
frozen graph by ``facemask models build``, see :mod:`facemask.model.quantize`). No TensorFlow
needed.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facemask.model import store as modelstore
from facemask.model.native import banners_filtered
from facemask.model.runtime.base import RuntimeConfig, check_batch, usable_cpus

logger = logging.getLogger(__name__)

MODEL_FILE = "face_mask_detection.tflite"
LOC_NAME = "loc_branch_concat_1/concat"
CLS_NAME = "cls_branch_concat_1/concat"
VARIANTS = ("upstream", "float32", "int8")


def _load_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the tflite runtime needs LiteRT: pip install ai-edge-litert") from exc
    return Interpreter


def variant_model_path(variant: str) -> Path:
    """The model file of a variant (``upstream``: the cached upstream artifact; ``float32``
    and ``int8``: the files ``facemask models build`` writes into the model cache)."""
    if variant == "upstream":
        return modelstore.artifact_path(MODEL_FILE)
    if variant not in VARIANTS:
        raise ValueError(f"unknown tflite variant {variant!r}; known: {', '.join(VARIANTS)}")
    from facemask.model import quantize

    path = quantize.variant_path(variant)
    if not path.is_file():
        raise modelstore.ModelStoreError(
            f"{path.name}: not built in {path.parent}; run `facemask models build`"
        )
    return path


class _Interpreter:
    """One LiteRT interpreter and the indices of its input and two outputs."""

    def __init__(self, interpreter_class: Any, model_path: Path, threads: int) -> None:
        self.interpreter: Any = interpreter_class(model_path=str(model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        (inp,) = self.interpreter.get_input_details()
        self.input_index = int(inp["index"])
        if inp["dtype"] != np.float32:
            raise ValueError(f"{model_path}: input is {inp['dtype']}, not float32")
        _, height, width, _ = (int(d) for d in inp["shape"])
        self.input_size = (width, height)
        details = self.interpreter.get_output_details()
        outputs = {d["name"]: int(d["index"]) for d in details}
        if LOC_NAME in outputs and CLS_NAME in outputs:
            self.loc_index, self.cls_index = outputs[LOC_NAME], outputs[CLS_NAME]
        else:  # converters may rename outputs: tell them apart by their last dimension
            by_dim = {int(d["shape"][-1]): int(d["index"]) for d in details if len(d["shape"]) == 3}
            if len(details) != 2 or set(by_dim) != {2, 4}:
                raise ValueError(
                    f"{model_path}: outputs {sorted(outputs)} are not the face-mask model's"
                )
            self.loc_index, self.cls_index = by_dim[4], by_dim[2]
        self.shapes = {int(d["index"]): tuple(int(x) for x in d["shape"]) for d in details}

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Invoke once per image of ``batch``; copies of the outputs."""
        loc, cls = self.outputs(len(batch))
        self.run_into(batch, itertools.count(), loc, cls)
        return loc, cls

    def outputs(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Empty output arrays for ``n`` images."""
        loc = np.empty((n, *self.shapes[self.loc_index][1:]), dtype=np.float32)
        cls = np.empty((n, *self.shapes[self.cls_index][1:]), dtype=np.float32)
        return loc, cls

    def run_into(
        self, batch: np.ndarray, take: Iterator[int], loc: np.ndarray, cls: np.ndarray
    ) -> None:
        """Invoke on image ``next(take)`` of ``batch``, writing its outputs into row of
        ``loc`` and ``cls``, until ``take`` passes the end: interpreters sharing one
        ``take`` share the batch image by image, so none waits while another still has a
        long part to run (a thread the OS preempted finishes less; the others take more)."""
        n = len(batch)
        for i in take:  # next() on itertools.count is atomic under the GIL
            if i >= n:
                return
            self.interpreter.set_tensor(self.input_index, batch[i : i + 1])
            self.interpreter.invoke()
            loc[i] = self.interpreter.get_tensor(self.loc_index)[0]
            cls[i] = self.interpreter.get_tensor(self.cls_index)[0]


class TFLiteConfig(RuntimeConfig):
    """Options of the ``tflite`` runtime (see :class:`TFLiteRuntime`)."""

    type: Literal["tflite"] = "tflite"
    variant: Literal["upstream", "float32", "int8"] = Field("upstream", description="model")
    interpreters: int = Field(1, ge=1, description="interpreters running a batch in parallel")
    num_threads: int | None = Field(None, ge=1, description="threads of each interpreter")

    def create(self) -> TFLiteRuntime:
        """Load the ``.tflite`` model on LiteRT."""
        return TFLiteRuntime(**self.model_dump(exclude={"type"}))


class TFLiteRuntime:
    """A ``.tflite`` face-mask model on LiteRT's XNNPACK CPU delegate.

    Options: ``model_path`` (default: the file of ``variant``), ``variant`` (``upstream``,
    the default; ``float32`` or ``int8``: built by ``facemask models build``),
    ``interpreters`` (default 1: interpreters running the items of a batch in parallel,
    e.g. one per core with one thread each), ``num_threads`` (alias ``threads``: threads
    of each interpreter; default: the usable CPUs divided among the interpreters).
    """

    name = "tflite"
    input_size: tuple[int, int] = (260, 260)
    max_batch_size: int | None = None

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        variant: str = "upstream",
        interpreters: int = 1,
        num_threads: int | None = None,
        threads: int | None = None,
    ) -> None:
        if interpreters < 1:
            raise ValueError("interpreters must be >= 1")
        self.variant = variant
        self.precision = "int8" if variant == "int8" else "float32"
        self.model_path = Path(model_path) if model_path else variant_model_path(variant)
        interpreter_class = _load_interpreter_class()
        self.interpreters = interpreters
        self.num_threads = num_threads or threads or max(1, usable_cpus() // interpreters)
        with banners_filtered():  # LiteRT's "Created ... XNNPACK delegate" INFO line
            self._pool_members = [
                _Interpreter(interpreter_class, self.model_path, self.num_threads)
                for _ in range(interpreters)
            ]
        sizes = {member.input_size for member in self._pool_members}
        (self.input_size,) = sizes
        self._executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(interpreters, thread_name_prefix="tflite")
            if interpreters > 1
            else None
        )
        self._closed = False
        logger.debug(
            "loaded %s (interpreters=%d, threads=%d)",
            self.model_path,
            interpreters,
            self.num_threads,
        )

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs ``loc [B, A, 4]``, ``cls [B, A, 2]`` at the model's input size (read
        from its input details; A = 5972 at 260x260); one invoke per image, the
        interpreters taking the images one at a time (:meth:`_Interpreter.run_into`)."""
        if self._closed:
            raise RuntimeError("runtime is closed")
        batch = check_batch(batch, self.input_size)
        members = self._pool_members
        if self._executor is None or len(batch) < 2:
            return members[0].run(batch)
        loc, cls = members[0].outputs(len(batch))
        take = itertools.count()
        futures = [
            self._executor.submit(member.run_into, batch, take, loc, cls)
            for member in members[: len(batch)]
        ]
        wait(futures)  # every interpreter idle again before this call returns or raises
        for future in futures:
            future.result()
        return loc, cls

    def close(self) -> None:
        """Drop the interpreters and their threads."""
        self._closed = True
        self._pool_members = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
