"""Export a Keras face-mask SSD as a model version: the files every runtime loads.

:func:`export_version` writes into a directory:

- ``model.pb``: a frozen TensorFlow graph laid out as the upstream one, with its tensor
  names (input ``data_1:0`` float32 ``[B, H, W, 3]``, outputs
  ``loc_branch_concat_1/concat:0`` and ``cls_branch_concat_1/concat:0``, class
  probabilities after the sigmoid) and batch norm already folded, so the TensorFlow
  runtime, :mod:`facemask.model.quantize` and :func:`facemask.model.ssd.build_ssd` read it
  as they read the upstream graph; the input size is in its placeholder;
- ``model.float32.tflite`` and ``model.int8.tflite`` (post-training int8, float32 in and
  out, calibrated on the given images), converted from ``model.pb`` by
  :func:`facemask.model.quantize.convert_graph`.

The graph is written op by op from the model's layer weights (:data:`facemask.model.ssd`
names), not traced from Keras, so its node names are the upstream ones whatever Keras
would call them; whether the model was built with ``logits`` does not matter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facemask.core.anchors import feature_map_sizes_for
from facemask.model import quantize
from facemask.model.native import import_tensorflow
from facemask.model.ssd import (
    BACKBONE,
    CLS_NAME,
    HEAD_SOURCES,
    INPUT_NAME,
    LOC_NAME,
    NUM_CLASSES,
    POOLED,
    VERSION_MODEL,
    ConvSpec,
    all_convs,
    head_convs,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

logger = logging.getLogger(__name__)

FILES: dict[str, str] = {
    "tf": VERSION_MODEL,
    "float32": "model.float32.tflite",
    "int8": "model.int8.tflite",
}
"""Variant -> file name inside a model version directory."""


def layer_weights(model: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer: (kernel, bias)}`` of every convolution of a :func:`build_ssd` model."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in all_convs():
        try:
            kernel, bias = model.get_layer(spec.name).get_weights()
        except ValueError as exc:
            raise ValueError(f"not a face-mask SSD model: no layer {spec.name}") from exc
        out[spec.name] = (np.asarray(kernel, np.float32), np.asarray(bias, np.float32))
    return out


def frozen_graph_def(model: keras.Model, input_size: int) -> Any:
    """The frozen ``GraphDef`` of ``model``'s weights at square ``input_size`` with the
    upstream node names (see the module docstring)."""
    feature_map_sizes_for(input_size)  # ValueError on a size the network cannot take
    weights = layer_weights(model)
    tf = import_tensorflow()
    graph = tf.Graph()

    def conv(spec: ConvSpec, x: Any) -> Any:
        kernel, bias = weights[spec.name]
        with tf.compat.v1.name_scope(f"{spec.name}_1/"):
            x = tf.nn.conv2d(
                x, tf.constant(kernel, name="kernel"), 1, spec.padding.upper(), name="convolution"
            )
            if not spec.relu:  # a head's last convolution: its own bias
                return tf.nn.bias_add(x, tf.constant(bias, name="bias"), name="BiasAdd")
        with tf.compat.v1.name_scope(f"{spec.name}_bn_1/"):  # the folded batch norm
            x = tf.nn.bias_add(x, tf.constant(bias, name="folded_bias"), name="FusedBatchNorm_1")
        with tf.compat.v1.name_scope(f"{spec.name}_activation_1/"):
            return tf.nn.relu(x, name="Relu")

    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, input_size, input_size, 3], INPUT_NAME)
        features: dict[str, Any] = {}
        for i, spec in enumerate(BACKBONE):
            x = conv(spec, x)
            features[spec.name] = x
            if i < POOLED:
                with tf.compat.v1.name_scope(f"maxpool2d_{i}_1/"):
                    x = tf.nn.max_pool2d(x, 2, 2, "SAME", name="MaxPool")
        branches: dict[str, list[Any]] = {"loc": [], "cls": []}
        for level, source in enumerate(HEAD_SOURCES):
            for branch, width in (("loc", 4), ("cls", NUM_CLASSES)):
                insert, last = head_convs(branch, level)
                y = conv(last, conv(insert, features[source]))
                with tf.compat.v1.name_scope(f"{branch}_{level}_reshape_1/"):
                    y = tf.reshape(y, tf.stack([tf.shape(y)[0], -1, width]), name="Reshape")
                if branch == "cls":
                    with tf.compat.v1.name_scope(f"cls_{level}_activation_1/"):
                        y = tf.sigmoid(y, name="Sigmoid")
                branches[branch].append(y)
        for name, parts in ((LOC_NAME, branches["loc"]), (CLS_NAME, branches["cls"])):
            scope, _, op = name.partition("/")
            with tf.compat.v1.name_scope(f"{scope}/"):
                tf.concat(parts, axis=1, name=op)
    return graph.as_graph_def()


def export_version(
    model: keras.Model,
    out_dir: Path,
    *,
    calibration: Sequence[Path] | None,
    input_size: int,
    calibration_limit: int | None = quantize.DEFAULT_CALIBRATION_LIMIT,
) -> dict[str, Path]:
    """Write ``model.pb``, ``model.float32.tflite`` and ``model.int8.tflite`` of ``model``
    (a :func:`facemask.model.ssd.build_ssd` model) at square ``input_size`` into
    ``out_dir`` (created) and return ``{"tf": ..., "float32": ..., "int8": ...}``.

    ``int8`` is calibrated on the ``calibration`` images (at most ``calibration_limit``,
    evenly spread; each as the full frame and its four quadrants) and skipped, absent from
    the result, when ``calibration`` is None (an ``int8`` file left in ``out_dir`` by an
    earlier export is removed: it would be another model's). Every file is written
    atomically. Raises
    ``ValueError`` for a model that is not the face-mask SSD or a size it cannot take, and
    :class:`facemask.model.quantize.QuantizeError` when a TFLite conversion fails.
    """
    if calibration is not None and not calibration:
        raise ValueError("calibration: give images, or None to skip int8")
    graph_def = frozen_graph_def(model, input_size)
    out_dir = Path(out_dir)
    paths = {"tf": out_dir / FILES["tf"]}
    quantize.write_atomically(paths["tf"], graph_def.SerializeToString())
    variants = ["float32"] if calibration is None else ["float32", "int8"]
    if calibration is None:
        (out_dir / FILES["int8"]).unlink(missing_ok=True)
    for variant in variants:
        paths[variant] = quantize.convert_graph(
            paths["tf"],
            variant,
            out_dir / FILES[variant],
            calibration=list(calibration or ()),
            calibration_limit=calibration_limit,
        )
    logger.info(
        "exported model version files",
        extra={"out_dir": str(out_dir), "input_size": input_size, "files": sorted(paths)},
    )
    return paths
