"""The face-mask detector: pre-processing, a runtime, and numpy post-processing.

``import facemask.model.detector`` does not load TensorFlow: a runtime loads its framework
when :func:`create_detector` creates it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facemask.core.anchors import generate_anchors
from facemask.core.nms import postprocess as postprocess_one
from facemask.core.preprocess import INPUT_SIZE, preprocess_batch
from facemask.core.tiling import TileSpec, crop, map_detections, tile_windows
from facemask.core.types import Detections
from facemask.model import store as modelstore
from facemask.model.runtime import RuntimeConfig, parse_runtime_config
from facemask.model.runtime.base import Runtime

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "aizoo-face-mask"
DEFAULT_CONF = 0.5
DEFAULT_IOU = 0.4
DEFAULT_BATCH_SIZE = 32
PINNED_MODEL_FILE = "face_mask_detection.pb"


def model_version_of(path: Path) -> str:
    """Model version tag: the first 12 hex characters of the model file's sha256."""
    return modelstore.sha256_file(path)[:12]


def _pinned_sha256() -> str:
    try:
        return modelstore.find_artifact(PINNED_MODEL_FILE).sha256
    except modelstore.ModelStoreError:
        return ""


class Detector:
    """Detects masked (``mask``) and unmasked (``no_mask``) faces in RGB images.

    ``infer`` runs the model on a pre-processed batch; it and ``detect`` / ``warmup`` must
    be called from one thread at a time (the runtime is not thread-safe). ``postprocess``
    is pure numpy and safe from any thread. Thresholds given per call override the
    defaults ``conf`` (score > conf) and ``iou`` (IoU > iou suppresses).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        conf: float = DEFAULT_CONF,
        iou: float = DEFAULT_IOU,
        model_name: str = DEFAULT_MODEL_NAME,
        model_version: str | None = None,
        model_sha256: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.conf = float(conf)
        self.iou = float(iou)
        self.model_name = model_name
        self.model_sha256 = _pinned_sha256() if model_sha256 is None else model_sha256
        """sha256 of the model file the runtime loaded (``GetModelInfo``)."""
        self.model_version = model_version or self.model_sha256[:12] or "unknown"
        self.anchors = generate_anchors(input_size=self.input_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the model input: the runtime's, read from its model file."""
        width, height = getattr(self.runtime, "input_size", INPUT_SIZE)
        return (int(width), int(height))

    @property
    def precision(self) -> str:
        """What the model computes in: ``float32``, ``bf16`` or ``int8``."""
        return str(getattr(self.runtime, "precision", "float32"))

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (``loc [B, A, 4]``, ``cls [B, A, 2]``; A = 5972 at 260x260) of a
        float32 batch ``[B, H, W, 3]`` at :attr:`input_size`; larger batches than the
        runtime takes are split."""
        limit = self.runtime.max_batch_size
        if limit is None or len(batch) <= limit:
            return self.runtime.infer(batch)
        parts = [self.runtime.infer(batch[i : i + limit]) for i in range(0, len(batch), limit)]
        return (
            np.concatenate([loc for loc, _ in parts]),
            np.concatenate([cls for _, cls in parts]),
        )

    def postprocess(
        self,
        loc: np.ndarray,
        cls: np.ndarray,
        conf: float | None = None,
        iou: float | None = None,
    ) -> Detections:
        """Detections of one image from its raw outputs ``loc [A, 4]``, ``cls [A, 2]``."""
        return postprocess_one(
            loc,
            cls,
            self.anchors,
            self.conf if conf is None else float(conf),
            self.iou if iou is None else float(iou),
        )

    def detect(
        self,
        images: Sequence[np.ndarray],
        *,
        conf: float | None = None,
        iou: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        tiles: TileSpec | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[Detections]:
        """Detections of each RGB uint8 image (any sizes), in input order.

        Images are pre-processed and run in chunks of ``batch_size``; results do not
        depend on the batch size. With ``tiles`` every image runs as the windows of
        :func:`facemask.core.tiling.tile_windows` (full frame plus tiles, all in the same
        batches) and the detections are merged by :func:`~facemask.core.tiling.map_detections`
        (NMS at ``iou``). ``sizes`` gives each image's original ``(width, height)`` when it
        was decoded at a reduced scale (default: its array size). Without ``tiles`` the
        result is exactly the untiled detector's.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if tiles is not None:
            return self._detect_tiled(images, tiles, conf, iou, batch_size, sizes)
        return self._run(images, conf, iou, batch_size)

    def _run(
        self, images: Sequence[np.ndarray], conf: float | None, iou: float | None, batch_size: int
    ) -> list[Detections]:
        """Pre-process, infer and post-process ``images`` in chunks of ``batch_size``."""
        results: list[Detections] = []
        for start in range(0, len(images), batch_size):
            batch = preprocess_batch(images[start : start + batch_size], self.input_size)
            loc, cls = self.infer(batch)
            results.extend(self.postprocess(loc[i], cls[i], conf, iou) for i in range(len(loc)))
        return results

    def _detect_tiled(
        self,
        images: Sequence[np.ndarray],
        tiles: TileSpec,
        conf: float | None,
        iou: float | None,
        batch_size: int,
        sizes: Sequence[tuple[int, int]] | None,
    ) -> list[Detections]:
        """:meth:`detect` with tiles: every window of every image is one batch item."""
        if sizes is not None and len(sizes) != len(images):
            raise ValueError("one size is needed per image")
        plans: list[tuple[int, int, list[tuple[int, int, int, int]]]] = []
        crops: list[np.ndarray] = []
        for i, rgb in enumerate(images):
            width, height = sizes[i] if sizes is not None else (rgb.shape[1], rgb.shape[0])
            windows = tile_windows(width, height, tiles)
            plans.append((width, height, windows))
            crops.extend(crop(rgb, window, width, height) for window in windows)
        per_window = self._run(crops, conf, iou, batch_size)
        merge_iou = self.iou if iou is None else float(iou)
        results: list[Detections] = []
        offset = 0
        for width, height, windows in plans:
            dets = per_window[offset : offset + len(windows)]
            offset += len(windows)
            results.append(map_detections(dets, windows, width, height, iou=merge_iou))
        return results

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the model once per batch size so the first real request is not slow."""
        width, height = self.input_size
        for size in batch_sizes:
            self.infer(np.zeros((size, height, width, 3), dtype=np.float32))

    def close(self) -> None:
        """Release the runtime."""
        self.runtime.close()

    def __repr__(self) -> str:
        return (
            f"Detector(runtime={self.runtime.name!r}, model={self.model_name}@"
            f"{self.model_version}, conf={self.conf}, iou={self.iou})"
        )


def create_detector(
    runtime: str | RuntimeConfig = "tensorflow",
    *,
    model_path: Path | None = None,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    **runtime_options: Any,
) -> Detector:
    """A :class:`Detector` on a runtime: a validated :class:`RuntimeConfig`, or a runtime
    name (``tensorflow``, ``tflite``, ...) with its options, validated here (``ValueError``
    on an unknown or misplaced option, before anything loads).

    ``model_path`` defaults to the runtime's cached artifact. The model version is the
    sha256 prefix of the file the runtime loaded (``-bf16`` added when the runtime
    computes in bf16).
    """
    if isinstance(runtime, RuntimeConfig):
        if runtime_options or model_path is not None:
            raise TypeError("pass the options inside the RuntimeConfig, not beside it")
        config = runtime
    else:
        config = parse_runtime_config(
            {"type": runtime, "model_path": model_path, **runtime_options}
        )
    rt = config.create()
    loaded = getattr(rt, "model_path", None)
    sha256 = modelstore.sha256_file(Path(loaded)) if loaded else None
    version = sha256[:12] if sha256 else None
    detector = Detector(rt, conf=conf, iou=iou, model_version=version, model_sha256=sha256)
    if version and detector.precision == "bf16":
        detector.model_version += "-bf16"  # the same file, other numbers: tell consumers apart
    return detector
