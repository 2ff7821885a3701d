"""The upstream AIZOO face-mask SSD as a trainable Keras model.

Architecture (read off the frozen graph ``face_mask_detection.pb``): a backbone of eight
3x3 convolutions, each followed by batch norm and ReLU (``conv2d_0`` .. ``conv2d_7``:
32, 64, 64, 64, 128, 128, 64, 64 filters), with a 2x2 stride-2 ``SAME`` max pool after
each of the first six; all ``SAME`` except ``conv2d_7`` (``VALID``). Five detection heads
read ``conv2d_3`` .. ``conv2d_7`` (33, 17, 9, 5, 3 cells a side at 260x260). Each head has
a location and a class branch: a 3x3 convolution of 64 filters + batch norm + ReLU
(``{loc,cls}_N_insert_conv2d``), then a 3x3 convolution with bias (``{loc,cls}_N_conv``)
giving 4 anchors x 4 offsets or 4 anchors x 2 class scores per cell, reshaped to
``[B, cells x 4, 4 | 2]`` and concatenated over the heads along the anchor axis. The
class scores go through a **sigmoid** per class (independent ``mask`` / ``no_mask``
probabilities, not a softmax over the two), as the upstream graph does.

Batch norm is folded into the convolutions before the weights are read (by
:func:`facemask.model.runtime.tensorflow.fold_batch_norms`, the TensorFlow runtime's own
folding), so every convolution here is a plain ``Conv2D`` with bias. The layer names are
the upstream node names without their ``_1`` suffix, which is how
:func:`read_frozen_weights` maps graph weights to layers and how
:mod:`facemask.model.export` writes them back.

TensorFlow and Keras are imported when a model is built, not when this module is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facemask.core.anchors import DEFAULT_INPUT_SIZE, feature_map_sizes_for
from facemask.model import store as modelstore
from facemask.model.native import import_tensorflow

if TYPE_CHECKING:  # pragma: no cover
    import keras

SOURCE_MODEL = "face_mask_detection.pb"
"""The pinned upstream frozen graph in the model cache: the default weights."""
VERSION_MODEL = "model.pb"
"""The frozen graph inside a model version directory (:mod:`facemask.model.export`)."""
INPUT_NAME = "data_1"
LOC_NAME = "loc_branch_concat_1/concat"
CLS_NAME = "cls_branch_concat_1/concat"
NUM_HEADS = 5
ANCHORS_PER_CELL = 4
NUM_CLASSES = 2


@dataclass(frozen=True, slots=True)
class ConvSpec:
    """One convolution of the network: layer name, filters, padding, ReLU after it."""

    name: str
    filters: int
    padding: str = "same"
    relu: bool = True


BACKBONE: tuple[ConvSpec, ...] = tuple(
    ConvSpec(f"conv2d_{i}", filters, "valid" if i == 7 else "same")
    for i, filters in enumerate((32, 64, 64, 64, 128, 128, 64, 64))
)
"""The backbone convolutions; a max pool follows each of the first six."""
POOLED = 6
HEAD_SOURCES = ("conv2d_3", "conv2d_4", "conv2d_5", "conv2d_6", "conv2d_7")
"""The backbone layer each detection head reads."""


def head_convs(branch: str, level: int) -> tuple[ConvSpec, ConvSpec]:
    """The two convolutions of one branch (``loc`` or ``cls``) of head ``level``."""
    width = 4 if branch == "loc" else NUM_CLASSES
    return (
        ConvSpec(f"{branch}_{level}_insert_conv2d", 64),
        ConvSpec(f"{branch}_{level}_conv", ANCHORS_PER_CELL * width, relu=False),
    )


def all_convs() -> list[ConvSpec]:
    """Every convolution of the network, backbone first, then each head's loc and cls."""
    convs = list(BACKBONE)
    for level in range(NUM_HEADS):
        for branch in ("loc", "cls"):
            convs.extend(head_convs(branch, level))
    return convs


class WeightsError(ValueError):
    """A frozen graph does not hold the face-mask SSD's weights."""


_CONV_NODE = re.compile(r"^(?P<layer>.+)_1/convolution$")


def frozen_graph_path(weights: Path | str | None) -> Path:
    """The frozen graph ``weights`` names: a ``.pb`` file, a model version directory
    (its ``model.pb``), or None for the cached upstream graph."""
    if weights is None:
        return modelstore.artifact_path(SOURCE_MODEL)
    path = Path(weights)
    if path.is_dir():
        path = path / VERSION_MODEL
    if not path.is_file():
        raise WeightsError(f"{path}: no such frozen graph")
    return path


def read_frozen_weights(
    weights: Path | str | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer: (kernel [3, 3, in, out], bias [out])}`` of every convolution of a frozen
    face-mask graph (see :func:`frozen_graph_path`), batch norm folded.

    A convolution node ``<layer>_1/convolution`` with a constant kernel, followed by the
    ``BiasAdd`` of a constant bias (a head's own bias, or a folded batch norm), is layer
    ``<layer>``. Raises :class:`WeightsError` when a layer is missing or has the wrong shape.
    """
    from facemask.model.runtime.tensorflow import fold_batch_norms

    path = frozen_graph_path(weights)
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise WeightsError(f"{path}: not a frozen TensorFlow graph ({exc})") from exc
    graph_def, _ = fold_batch_norms(tf, graph_def)
    nodes = {node.name: node for node in graph_def.node}
    consumers: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for ref in node.input:
            consumers.setdefault(ref.lstrip("^").partition(":")[0], []).append(node)

    def constant(ref: str) -> np.ndarray | None:
        node = nodes.get(ref.lstrip("^").partition(":")[0])
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].partition(":")[0])
        if node is None or node.op != "Const":
            return None
        return np.asarray(tf.make_ndarray(node.attr["value"].tensor), dtype=np.float32)

    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in graph_def.node:
        match = _CONV_NODE.match(node.name)
        if node.op != "Conv2D" or match is None:
            continue
        kernel = constant(node.input[1])
        adds = [c for c in consumers.get(node.name, []) if c.op == "BiasAdd"]
        bias = constant(adds[0].input[1]) if len(adds) == 1 else None
        if kernel is not None and bias is not None:
            found[match["layer"]] = (kernel, bias)
    weights_out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in all_convs():
        if spec.name not in found:
            raise WeightsError(f"{path}: no weights for layer {spec.name}")
        kernel, bias = found[spec.name]
        if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or kernel.shape[3] != spec.filters:
            raise WeightsError(
                f"{path}: layer {spec.name} has kernel {kernel.shape}, expected "
                f"[3, 3, *, {spec.filters}]"
            )
        if bias.shape != (spec.filters,):
            raise WeightsError(f"{path}: layer {spec.name} has bias {bias.shape}")
        weights_out[spec.name] = (kernel, bias)
    return weights_out


def build_ssd(
    input_size: int = DEFAULT_INPUT_SIZE,
    *,
    weights: Path | str | None = None,
    logits: bool = False,
) -> keras.Model:
    """The face-mask SSD as a Keras functional model for square ``input_size`` inputs.

    Input: float32 ``[B, input_size, input_size, 3]``, RGB in ``[0, 1]`` (what
    :func:`facemask.core.preprocess.preprocess_batch` makes). Outputs: ``loc [B, A, 4]``
    (offsets to decode against ``generate_anchors(input_size=(input_size, input_size))``)
    and ``cls [B, A, 2]``: the ``mask`` / ``no_mask`` probabilities (sigmoid each), or with
    ``logits=True`` the scores before the sigmoid (for training losses). ``A`` is 5972 at
    260. Weights: from the frozen graph ``weights`` (a ``.pb``, a version directory, or
    None for the cached upstream graph), batch norm folded; all trainable.

    On the same input it equals the frozen graph's outputs within 1e-4 (float32). The
    upstream weights are tuned to 260: at another size train the model before use (see
    :mod:`facemask.core.anchors`).
    """
    feature_map_sizes_for(input_size)  # ValueError on a size the network cannot take
    values = read_frozen_weights(weights)
    import_tensorflow()  # quietly, before Keras pulls TensorFlow in
    import keras

    layers = keras.layers

    def conv(spec: ConvSpec, x: Any) -> Any:
        layer = layers.Conv2D(spec.filters, 3, padding=spec.padding, name=spec.name)
        x = layer(x)
        layer.set_weights(list(values[spec.name]))
        return layers.ReLU(name=f"{spec.name}_relu")(x) if spec.relu else x

    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME.removesuffix("_1"))
    x = inputs
    features: dict[str, Any] = {}
    for i, spec in enumerate(BACKBONE):
        x = conv(spec, x)
        features[spec.name] = x
        if i < POOLED:
            x = layers.MaxPooling2D(2, 2, padding="same", name=f"maxpool2d_{i}")(x)
    outputs: dict[str, list[Any]] = {"loc": [], "cls": []}
    for level, source in enumerate(HEAD_SOURCES):
        for branch, width in (("loc", 4), ("cls", NUM_CLASSES)):
            insert, last = head_convs(branch, level)
            y = conv(last, conv(insert, features[source]))
            y = layers.Reshape((-1, width), name=f"{branch}_{level}_reshape")(y)
            if branch == "cls" and not logits:
                y = layers.Activation("sigmoid", name=f"cls_{level}_activation")(y)
            outputs[branch].append(y)
    loc = layers.Concatenate(axis=1, name="loc_branch_concat")(outputs["loc"])
    cls = layers.Concatenate(axis=1, name="cls_branch_concat")(outputs["cls"])
    return keras.Model(inputs, [loc, cls], name=f"face_mask_ssd_{input_size}")
