"""Build TFLite models (float32 and post-training int8) from the upstream frozen graph.

The derived files live in the model cache (git-ignored), next to the upstream artifacts,
and are built at setup by ``facemask models build``. A build is skipped when its
``<file>.json`` stamp records the same key: the sha256 of the source graph, of the
calibration images and of the converter version, plus the build options.

The int8 model is quantized post-training (weights and activations int8, float32 input and
outputs so every runtime feeds it the same tensors), calibrated on a representative set of
frames: the images of ``../shared/data/facemask-dev`` when present, else the sample images.

:func:`convert_graph` converts any frozen face-mask graph (a trained model version's
``model.pb``, see :mod:`facemask.model.export`) to a given file, at the input size its
placeholder declares.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemask.core.preprocess import INPUT_SIZE, decode_image, preprocess
from facemask.model import store as modelstore
from facemask.model.native import import_tensorflow
from facemask.model.runtime.tensorflow import graph_input_size

logger = logging.getLogger(__name__)

SOURCE_MODEL = "face_mask_detection.pb"
INPUT_NAME = "data_1"
OUTPUT_NAMES = ("loc_branch_concat_1/concat", "cls_branch_concat_1/concat")
VARIANTS: dict[str, str] = {
    "float32": "face_mask_detection.float32.tflite",
    "int8": "face_mask_detection.int8.tflite",
}
"""Built variant -> file name in the model cache."""
CALIBRATION_ENV = "FACEMASK_CALIBRATION_DIR"
DEFAULT_CALIBRATION_LIMIT = 60
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
BUILD_FORMAT = 1  # bump when the conversion recipe changes


class QuantizeError(RuntimeError):
    """The model cannot be built (missing source graph, converter failure)."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    """One built (or already up-to-date) variant."""

    variant: str
    path: Path
    built: bool
    seconds: float


def variant_path(variant: str) -> Path:
    """Path of a built variant in the model cache (it may not exist yet)."""
    try:
        return modelstore.cache_dir() / VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}") from None


def built_calibration(variant: str) -> str | None:
    """The calibration sha256 recorded in a built variant's stamp (``""`` for float32, which
    needs none); None when the variant or its stamp is absent or unreadable."""
    stamp = variant_path(variant).with_name(VARIANTS[variant] + ".json")
    try:
        value = json.loads(stamp.read_text())["key"]["calibration_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def default_calibration_dir() -> Path | None:
    """The dev images (``$FACEMASK_CALIBRATION_DIR`` or ``../shared/data/facemask-dev/images``
    beside the checkout), or None when absent."""
    override = os.environ.get(CALIBRATION_ENV)
    if override:
        return Path(override)
    candidate = modelstore.SOURCE_ROOT.parent / "shared" / "data" / "facemask-dev" / "images"
    return candidate if candidate.is_dir() else None


def calibration_images(directory: Path | None = None, limit: int | None = None) -> list[Path]:
    """Calibration image files, sorted: ``directory`` (default: the dev images), else the
    cached sample images. At most ``limit`` (evenly spread over the sorted list)."""
    directory = directory if directory is not None else default_calibration_dir()
    files: list[Path] = []
    if directory is not None and directory.is_dir():
        files = sorted(p for p in directory.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        try:
            files = sorted(modelstore.sample_images())
        except modelstore.ModelStoreError as exc:
            raise QuantizeError(f"no calibration images: {exc}") from exc
    files = spread([p for p in files if p.suffix.lower() in _IMAGE_SUFFIXES], limit)
    if not files:
        raise QuantizeError("no calibration images found")
    return files


def spread(files: Sequence[Path], limit: int | None) -> list[Path]:
    """At most ``limit`` of ``files``, evenly spread over the list (all when None)."""
    if limit is None or len(files) <= limit:
        return list(files)
    picks = np.linspace(0, len(files) - 1, limit).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def calibration_inputs(
    files: Sequence[Path], size: tuple[int, int] = INPUT_SIZE
) -> Iterator[np.ndarray]:
    """Model inputs ``[1, H, W, 3]`` (``size`` ``(W, H)``, default 260x260) of each
    calibration frame: the full frame as the detector sees it, then its four quadrants
    (what tiled inference feeds the model)."""
    for path in files:
        rgb = decode_image(path.read_bytes(), reduce="full").rgb
        yield preprocess(rgb, size)[None]
        height, width = rgb.shape[:2]
        half_w, half_h = max(1, width // 2), max(1, height // 2)
        for y0 in (0, height - half_h):
            for x0 in (0, width - half_w):
                yield preprocess(rgb[y0 : y0 + half_h, x0 : x0 + half_w], size)[None]


def _files_digest(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(modelstore.sha256_file(path).encode())
    return digest.hexdigest()


def _import_tensorflow() -> Any:
    try:
        return import_tensorflow()  # without its start-up banners
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise QuantizeError("building TFLite models needs TensorFlow") from exc


def convert(tf: Any, source: Path, variant: str, files: Sequence[Path]) -> bytes:
    """Convert the frozen graph ``source`` to the TFLite ``variant`` (float32 or int8),
    batch 1 at the input size of the graph's placeholder; ``files``: calibration images."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(source.read_bytes())
    width, height = graph_input_size(graph_def)
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(source),
        input_arrays=[INPUT_NAME],
        output_arrays=list(OUTPUT_NAMES),
        input_shapes={INPUT_NAME: [1, height, width, 3]},
    )
    if variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative() -> Iterator[list[np.ndarray]]:
            for tensor in calibration_inputs(files, (width, height)):
                yield [tensor]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    model: bytes = converter.convert()
    return model


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``target`` through a temporary file renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def convert_graph(
    source: Path,
    variant: str,
    target: Path,
    *,
    calibration: Sequence[Path] = (),
    calibration_limit: int | None = DEFAULT_CALIBRATION_LIMIT,
) -> Path:
    """Convert the frozen face-mask graph ``source`` (any input size) to the TFLite
    ``variant`` at ``target``; ``int8`` is calibrated on the ``calibration`` images (at
    most ``calibration_limit``, evenly spread). Raises :class:`QuantizeError`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    files = spread(list(calibration), calibration_limit)
    if variant == "int8" and not files:
        raise QuantizeError("int8 needs calibration images")
    tf = _import_tensorflow()
    started = time.perf_counter()
    try:
        model = convert(tf, source, variant, files)
    except Exception as exc:
        raise QuantizeError(f"converting {source} to {variant} failed: {exc}") from exc
    write_atomically(target, model)
    logger.info(
        "converted %s to %s (%d bytes) in %.1f s",
        source,
        target,
        len(model),
        time.perf_counter() - started,
    )
    return target


def build(
    variants: Sequence[str] = ("float32", "int8"),
    *,
    calibration_dir: Path | None = None,
    calibration_limit: int = DEFAULT_CALIBRATION_LIMIT,
    force: bool = False,
) -> list[BuildResult]:
    """Build each variant into the model cache unless its stamp is up to date.

    Raises :class:`QuantizeError` when the source graph is not cached or conversion fails.
    """
    for variant in variants:
        variant_path(variant)  # validates the name before any work
    try:
        source = modelstore.artifact_path(SOURCE_MODEL)
    except modelstore.ModelStoreError as exc:
        raise QuantizeError(str(exc)) from exc
    source_sha = modelstore.sha256_file(source)
    files = calibration_images(calibration_dir, calibration_limit)
    calib_sha = _files_digest(files)
    tf = _import_tensorflow()
    results: list[BuildResult] = []
    for variant in variants:
        started = time.perf_counter()
        target = variant_path(variant)
        stamp_path = target.with_name(target.name + ".json")
        key = {
            "format": BUILD_FORMAT,
            "variant": variant,
            "source_sha256": source_sha,
            "calibration_sha256": calib_sha if variant == "int8" else "",
            "calibration_images": len(files) if variant == "int8" else 0,
            "converter": f"tensorflow {tf.__version__}",
        }
        if not force and target.is_file() and stamp_path.is_file():
            try:
                stamp = json.loads(stamp_path.read_text())
            except (OSError, ValueError):
                stamp = {}
            if stamp.get("key") == key and stamp.get("sha256") == modelstore.sha256_file(target):
                logger.info("%s is up to date", target)
                results.append(BuildResult(variant, target, False, 0.0))
                continue
        try:
            model = convert(tf, source, variant, files)
        except Exception as exc:
            raise QuantizeError(f"converting {source.name} to {variant} failed: {exc}") from exc
        write_atomically(target, model)
        stamp_path.write_text(
            json.dumps({"key": key, "sha256": hashlib.sha256(model).hexdigest()}, indent=1)
        )
        seconds = time.perf_counter() - started
        logger.info("built %s (%d bytes) in %.1f s", target, len(model), seconds)
        results.append(BuildResult(variant, target, True, seconds))
    return results
