"""TensorFlow runtime: the upstream frozen graph, run as a pruned concrete function.

Any frozen face-mask graph with the upstream tensor names runs (a trained model version's
``model.pb``, see :mod:`facemask.model.export`); its input size is read from the graph's
input placeholder (:func:`graph_input_size`).

TensorFlow is imported only when a runtime is created (:func:`_import_tensorflow`, through
:func:`facemask.model.native.import_tensorflow`, which keeps its start-up banners off
stderr): discovering the runtime plugins imports this module cheaply.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facemask.core.preprocess import INPUT_SIZE
from facemask.model import store as modelstore
from facemask.model.native import import_tensorflow
from facemask.model.runtime.base import (
    RuntimeConfig,
    check_batch,
    resolve_precision,
    usable_cpus,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "face_mask_detection.pb"
INPUT_TENSOR = "data_1:0"
LOC_TENSOR = "loc_branch_concat_1/concat:0"
CLS_TENSOR = "cls_branch_concat_1/concat:0"


def _import_tensorflow() -> Any:
    try:
        return import_tensorflow()  # without its start-up banners
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the tensorflow runtime needs TensorFlow: pip install 'facemask[inference]'"
        ) from exc


_PROCESS_STATE: dict[str, str] = {}
"""``precision``: that of the first TensorFlow runtime of this process (bf16 is process-wide)."""


def process_precision() -> str:
    """The TensorFlow precision of this process: the one its first runtime fixed, else
    what ``auto`` resolves to (bf16 where the CPU has native bf16, else float32)."""
    return _PROCESS_STATE.get("precision") or resolve_precision("auto")


def _configure_precision(tf: Any, precision: str) -> None:
    """Fix the process's compute precision: ``bf16`` turns on grappler's oneDNN auto mixed
    precision (convolutions and matmuls in bf16 on AMX / AVX512-BF16, float32 in and out).

    That option is process-wide, and it pays only when set before TensorFlow runs its
    first op, so one process runs one precision: asking for the other one afterwards
    raises ``RuntimeError``.
    """
    current = _PROCESS_STATE.setdefault("precision", precision)
    if current != precision:
        raise RuntimeError(
            f"this process already runs the TensorFlow model in {current}; "
            f"{precision} needs a process of its own (the bf16 option is process-wide)"
        )
    if precision == "bf16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})


def _configure_threads(tf: Any, intra: int, inter: int) -> None:
    """Set TensorFlow's process-wide thread pools (possible only before its first op)."""
    threading = tf.config.threading
    if (
        threading.get_intra_op_parallelism_threads() == intra
        and threading.get_inter_op_parallelism_threads() == inter
    ):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        logger.warning(
            "TensorFlow is already initialised in this process; keeping its thread pools "
            "(intra_op=%d, inter_op=%d) instead of the requested %d/%d",
            threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads(),
            intra,
            inter,
        )


class TensorFlowConfig(RuntimeConfig):
    """Options of the ``tensorflow`` runtime (see :class:`TensorFlowRuntime`)."""

    type: Literal["tensorflow"] = "tensorflow"
    intra_op_threads: int | None = Field(None, ge=1, description="threads inside each op")
    inter_op_threads: int | None = Field(None, ge=1, description="ops run in parallel")
    fold_batch_norm: bool = Field(True, description="fold batch norms into convolutions")
    jit_compile: bool = Field(False, description="XLA (slower for this model on CPU)")
    precision: Literal["float32", "bf16", "auto"] = Field("float32", description="compute")

    def create(self) -> TensorFlowRuntime:
        """Load the frozen graph on TensorFlow."""
        return TensorFlowRuntime(**self.model_dump(exclude={"type"}))


class TensorFlowRuntime:
    """The frozen graph ``face_mask_detection.pb`` on TensorFlow (CPU, oneDNN).

    Options: ``model_path`` (default: the cached artifact), ``intra_op_threads`` (default:
    the CPUs this process may use; ``threads`` is the same, the name every runtime
    accepts), ``inter_op_threads`` (default 1: the graph is a chain
    of convolutions, parallelism inside each op is what pays), ``fold_batch_norm`` (default
    on: scale the convolution weights by the batch norms that follow them, 5-9 % faster at
    batch 16-64, outputs within 1e-5 of the original graph), ``jit_compile`` (XLA; slower
    for this model on CPU, off by default). Thread pools are process-wide in TensorFlow:
    the first runtime created in a process sets them. ``precision``: ``float32`` (default,
    the reference's numbers), ``bf16`` (oneDNN auto mixed precision: about 3x the float32
    rate on AMX, dev-set AP50 within 0.005 of float32; process-wide, see
    :func:`_configure_precision`) or ``auto`` (the precision this process already runs
    TensorFlow in, else bf16 where the CPU has native bf16, else float32).
    """

    name = "tensorflow"
    input_size: tuple[int, int] = (260, 260)
    max_batch_size: int | None = None

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        threads: int | None = None,
        fold_batch_norm: bool = True,
        jit_compile: bool = False,
        precision: str = "float32",
    ) -> None:
        started = time.perf_counter()
        # Resolve the model first: a missing file fails fast, before the slow TF import.
        self.model_path = Path(model_path) if model_path else modelstore.artifact_path(MODEL_FILE)
        auto = precision == "auto"
        self.precision = process_precision() if auto else resolve_precision(precision)
        tf = _import_tensorflow()
        self._tf = tf
        self.intra_op_threads = intra_op_threads or threads or usable_cpus()
        self.inter_op_threads = inter_op_threads or 1
        _configure_threads(tf, self.intra_op_threads, self.inter_op_threads)
        _configure_precision(tf, self.precision)
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(self.model_path.read_bytes())
        self.input_size = graph_input_size(graph_def)
        if fold_batch_norm:
            graph_def, folded = fold_batch_norms(tf, graph_def)
            logger.debug("folded %d batch norms into their convolutions", folded)

        def _import() -> None:
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        graph = wrapped.graph
        pruned = wrapped.prune(
            graph.get_tensor_by_name(INPUT_TENSOR),
            [graph.get_tensor_by_name(LOC_TENSOR), graph.get_tensor_by_name(CLS_TENSOR)],
        )
        self._fn: Any = tf.function(pruned, jit_compile=True) if jit_compile else pruned
        self._closed = False
        logger.debug(
            "loaded %s in %.2f s (intra_op=%d, inter_op=%d, jit=%s, %s)",
            self.model_path,
            time.perf_counter() - started,
            self.intra_op_threads,
            self.inter_op_threads,
            jit_compile,
            self.precision,
        )

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs ``loc [B, A, 4]``, ``cls [B, A, 2]`` of a float32 batch
        ``[B, H, W, 3]`` at :attr:`input_size` (A = 5972 at 260x260)."""
        if self._closed:
            raise RuntimeError("runtime is closed")
        batch = check_batch(batch, self.input_size)
        loc, cls = self._fn(self._tf.constant(batch))
        return loc.numpy(), cls.numpy()

    def close(self) -> None:
        """Drop the graph (TensorFlow keeps its thread pools for the process)."""
        self._closed = True
        self._fn = None


def graph_input_size(graph_def: Any) -> tuple[int, int]:
    """``(width, height)`` of a face-mask graph's input placeholder (``data_1``), the
    upstream 260x260 when the placeholder leaves them open."""
    name = _node_name(INPUT_TENSOR)
    for node in graph_def.node:
        if node.name == name and node.op == "Placeholder":
            dims = [d.size for d in node.attr["shape"].shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[2] > 0:
                return (int(dims[2]), int(dims[1]))
            return INPUT_SIZE
    raise ValueError(f"the graph has no input placeholder {name!r}: not a face-mask model")


def fold_batch_norms(tf: Any, graph_def: Any) -> tuple[Any, int]:
    """Fold every inference-mode ``FusedBatchNorm`` that directly follows a ``Conv2D``
    with constant weights into that convolution (new weights ``W * scale`` and a
    ``BiasAdd`` of ``beta - mean * scale``, ``scale = gamma / sqrt(var + eps)``).

    Returns the rewritten graph and the number of folded batch norms. Anything that does
    not match the pattern exactly is left as it is.
    """
    nodes = {node.name: node for node in graph_def.node}
    consumers: dict[str, int] = {}
    side_outputs_used: set[str] = set()  # nodes whose outputs other than :0 are read
    for node in graph_def.node:
        for ref in node.input:
            name, _, index = ref.lstrip("^").partition(":")
            consumers[name] = consumers.get(name, 0) + 1
            if index not in ("", "0"):
                side_outputs_used.add(name)

    def constant(ref: str) -> np.ndarray | None:
        node = nodes.get(_node_name(ref))
        while node is not None and node.op == "Identity":
            node = nodes.get(_node_name(node.input[0]))
        if node is None or node.op != "Const":
            return None
        return np.asarray(tf.make_ndarray(node.attr["value"].tensor))

    def const_node(name: str, value: np.ndarray) -> Any:
        node = tf.compat.v1.NodeDef(name=name, op="Const")
        node.attr["dtype"].type = tf.float32.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        return node

    new_weights: dict[str, Any] = {}  # conv name -> weight Const node
    replacements: dict[str, list[Any]] = {}  # batch norm name -> [bias Const, BiasAdd]
    for node in graph_def.node:
        if node.op != "FusedBatchNorm" or node.attr["is_training"].b:
            continue
        if node.attr["data_format"].s not in (b"", b"NHWC") or len(node.input) < 5:
            continue
        conv = nodes.get(_node_name(node.input[0]))
        if conv is None or conv.op != "Conv2D" or consumers.get(conv.name) != 1:
            continue
        if node.name in side_outputs_used:
            continue  # its batch statistics outputs are read
        params = [constant(name) for name in node.input[1:5]]
        weights = constant(conv.input[1])
        if weights is None or any(p is None for p in params):
            continue
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        scale = gamma / np.sqrt(var + node.attr["epsilon"].f)
        new_weights[conv.name] = const_node(
            conv.name + "/folded_weights", (weights * scale).astype(np.float32)
        )
        bias = const_node(node.name + "/folded_bias", (beta - mean * scale).astype(np.float32))
        add = tf.compat.v1.NodeDef(name=node.name, op="BiasAdd", input=[node.input[0], bias.name])
        add.attr["T"].type = tf.float32.as_datatype_enum
        add.attr["data_format"].s = b"NHWC"
        replacements[node.name] = [bias, add]
    if not replacements:
        return graph_def, 0
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in replacements:
            out.node.extend(replacements[node.name])
            continue
        copy = out.node.add()
        copy.CopyFrom(node)
        if node.name in new_weights:
            out.node.append(new_weights[node.name])
            copy.input[1] = new_weights[node.name].name
    return out, len(replacements)


def _node_name(ref: str) -> str:
    """``"^name:1"`` -> ``"name"``."""
    return ref.lstrip("^").partition(":")[0]
