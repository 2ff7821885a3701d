"""What the model benchmark runs, shared by :mod:`bench.bench_model` (in process) and its
:mod:`bench.model_worker` children: the frames (:func:`make_frames`), the detector settings
(``CONF``, ``IOU``, ``DEFAULT_BATCH``, ``DECODE_WORKERS``, ``THREAD_OPTIONS``) and the named
workloads (:func:`run_workload`). Both import this module; neither imports the other's
module at import time, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from bench import common

VIDEO = common.VIDEO
DEV_IMAGES = common.SHARED_DIR / "data" / "facemask-dev" / "images"
FRAME_SIZE = (1280, 720)
JPEG_QUALITY = 90
DEFAULT_BATCH = 32  # the inference service's max_batch_size
DECODE_WORKERS = 2  # the inference service's decode_workers
CONF, IOU = 0.5, 0.4


def make_frames(count: int, source: str = "auto") -> tuple[list[bytes], str]:
    """``count`` 1280x720 JPEG frames from the sample video (else the dev-set images)."""
    images: list[np.ndarray] = []
    used = ""
    if source in ("auto", "video") and VIDEO.is_file():
        capture = cv2.VideoCapture(str(VIDEO))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        step = max(1, total // count)
        index = 0
        while len(images) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                images.append(bgr)
            index += 1
        capture.release()
        used = f"video {VIDEO.name} (every {step}th frame, upscaled)"
    if not images and source in ("auto", "dev"):
        for path in sorted(DEV_IMAGES.glob("*.jpg"))[:count]:
            image = cv2.imread(str(path))
            if image is not None:
                images.append(image)
        used = f"dev-set images {DEV_IMAGES} (resized)"
    if not images:
        raise SystemExit(f"no frames: neither {VIDEO} nor {DEV_IMAGES} is readable")
    while len(images) < count:  # short source: repeat
        images.extend(images[: count - len(images)])
    frames = []
    for bgr in images[:count]:
        big = cv2.resize(bgr, FRAME_SIZE, interpolation=cv2.INTER_LINEAR)
        ok, encoded = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SystemExit("cv2.imencode failed")
        frames.append(encoded.tobytes())
    return frames, used


def model_loop(infer: Callable[[np.ndarray], object], tensors: np.ndarray, batch: int) -> None:
    for start in range(0, len(tensors), batch):
        infer(tensors[start : start + batch])


def project_end_to_end(
    detector: Any,
    frames: Sequence[bytes],
    pool: ThreadPoolExecutor,
    *,
    batch_size: int = DEFAULT_BATCH,
    reduce: str = "auto",
) -> int:
    """JPEG bytes -> detections the project's way; returns the number of detections.

    Decode + resize run in ``pool`` (every frame submitted at once, so decoding runs ahead
    of the model as in the inference service); the model thread stacks ``batch_size``
    ready tensors, runs one ``infer`` and post-processes each image.
    """
    from facemask.core.preprocess import decode_image, preprocess

    def prepare(data: bytes) -> np.ndarray:
        return preprocess(decode_image(data, reduce=reduce).rgb)

    futures = [pool.submit(prepare, data) for data in frames]
    found = 0
    for start in range(0, len(futures), batch_size):
        batch = np.stack([f.result() for f in futures[start : start + batch_size]])
        loc, cls = detector.infer(batch)
        for i in range(len(batch)):
            found += len(detector.postprocess(loc[i], cls[i], CONF, IOU))
    return found


def accuracy(detector: Any, tiles: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Dev-set COCO figures of ``detector`` (``tiles``: a tiling spec or None; ``limit``: only
    the first images, for smoke runs); ``{}`` when the dev set is absent."""
    from facemask.core.tiling import TileSpec
    from facemask.model import evaluation

    annotations = DEV_IMAGES.parent / "annotations.json"
    if not annotations.is_file():
        return {}
    coco = evaluation.load_annotations(annotations)
    if limit is not None:
        coco = evaluation.coco_subset(coco, limit)
    spec = TileSpec.parse(tiles) if tiles else None
    per_image = evaluation.detect_images(coco, DEV_IMAGES, detector, tiles=spec)
    rounded = evaluation.score(coco, per_image)
    unrounded = evaluation.score(coco, per_image, unrounded=True)
    return {
        "images": rounded.images,
        "AP": rounded.ap,
        "AP50": rounded.ap50,
        "AP_small": rounded.ap_small,
        "AP50_unrounded": unrounded.ap50,
        "AP_small_unrounded": unrounded.ap_small,
    }


def run_workload(
    detector: Any,
    op: str,
    args: dict[str, Any],
    *,
    frames: Sequence[bytes],
    rgb: Sequence[np.ndarray],
    tensors: np.ndarray,
    pool: ThreadPoolExecutor,
) -> object:
    """One named workload on ``detector``, the same in this process and in a
    :mod:`bench.model_worker` child: ``model`` (tensors at ``batch``), ``decoded`` (RGB frames
    -> detections, optional ``tiles``), ``e2e`` (JPEG bytes -> detections) or ``accuracy``."""
    from facemask.core.tiling import TileSpec

    if op == "model":
        model_loop(detector.infer, tensors, int(args["batch"]))
        return None
    if op == "decoded":
        tiles = args.get("tiles")
        spec = TileSpec.parse(tiles) if tiles else None
        return len(detector.detect(rgb, conf=CONF, iou=IOU, batch_size=DEFAULT_BATCH, tiles=spec))
    if op == "e2e":
        return project_end_to_end(detector, frames, pool)
    if op == "accuracy":
        return accuracy(detector, args.get("tiles"), args.get("limit"))
    raise ValueError(f"unknown workload {op!r}")


# Thread option of each runtime's factory, so that every runtime uses the same thread count.
THREAD_OPTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "tensorflow": lambda n: {"intra_op_threads": n, "inter_op_threads": 1},
    "tflite": lambda n: {"num_threads": n},
}
