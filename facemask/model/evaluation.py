"""COCO evaluation of the detector on an annotated image set (``facemask eval``).

Scoring is pycocotools' ``COCOeval`` (bbox), never a hand-written AP. Detector class 0 (mask)
is COCO category 1 and class 1 (no mask) is category 2. By default every detection is scored
as the integer box ``facemask detect`` prints (truncated and clipped xyxy, as the upstream
reference does) converted to COCO ``[x, y, w, h]``; ``unrounded=True`` scores the float box
clipped to the image instead.

This module does not import TensorFlow: the detector is made (and cached) on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facemask.core.preprocess import DECODE_MODES, DecodedImage, ImageDecodeError, decode_image
from facemask.core.tiling import TileSpec, tile_windows
from facemask.core.types import Detections

if TYPE_CHECKING:
    from facemask.model.detector import Detector

logger = logging.getLogger(__name__)

DEFAULT_CONF = 0.01
DEFAULT_IOU = 0.4
DEFAULT_BATCH_SIZE = 32
# detector class_id -> COCO category id
CLASS_TO_CATEGORY: dict[int, int] = {0: 1, 1: 2}
CATEGORY_NAMES: dict[int, str] = {1: "mask", 2: "no_mask"}
# indices into COCOeval.stats
_STAT_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")

_DETECTORS: dict[tuple[str, tuple[tuple[str, Any], ...]], Detector] = {}


class EvaluationError(RuntimeError):
    """A clear, one-line problem with the evaluation inputs (annotations, images)."""


@dataclass(frozen=True, slots=True)
class GroundTruthImage:
    """One entry of the COCO ``images`` list and the file it names."""

    image_id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class EvalResult:
    """COCO metrics of one run (AP values in [0, 1]; -1 where COCO has nothing to score)."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    per_class: dict[str, dict[str, float]]
    images: int
    detections: int
    seconds: float
    stats: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``facemask eval --json`` object."""
        return {
            "AP": self.ap,
            "AP50": self.ap50,
            "AP75": self.ap75,
            "AP_small": self.ap_small,
            "AP_medium": self.ap_medium,
            "AP_large": self.ap_large,
            "per_class": {name: dict(values) for name, values in self.per_class.items()},
            "images": self.images,
            "seconds": round(self.seconds, 3),
        }


# -- annotations ----------------------------------------------------------------------------


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a COCO annotation file; :class:`EvaluationError` if unusable."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise EvaluationError(f"cannot read annotation file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise EvaluationError(f"annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise EvaluationError(
            f"annotation file {path} is not COCO: it needs lists 'images', 'annotations' "
            "and 'categories'"
        )
    if not raw["images"]:
        raise EvaluationError(f"annotation file {path} lists no images")
    for annotation in raw["annotations"]:
        bbox = annotation.get("bbox") if isinstance(annotation, dict) else None
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or "image_id" not in annotation
            or "category_id" not in annotation
        ):
            raise EvaluationError(
                f"annotation file {path}: malformed annotation {annotation!r} (needs "
                "image_id, category_id and bbox [x, y, w, h])"
            )
    category_ids = {c.get("id") for c in raw["categories"] if isinstance(c, dict)}
    unknown = category_ids - set(CATEGORY_NAMES)
    if unknown or not category_ids:
        logger.warning(
            "annotation categories %s differ from the detector's %s",
            sorted(category_ids, key=str),
            CATEGORY_NAMES,
        )
    return raw


def coco_subset(coco: Mapping[str, Any], count: int) -> dict[str, Any]:
    """``coco`` with only its first ``count`` images and their annotations (the other keys,
    categories included, as they are): a smoke run's slice of a set."""
    images = list(coco["images"])[:count]
    keep = {image["id"] for image in images}
    return {
        **coco,
        "images": images,
        "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
    }


def ground_truth_images(coco: Mapping[str, Any], images_dir: str | Path) -> list[GroundTruthImage]:
    """The images of ``coco`` resolved under ``images_dir``; error listing missing files."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise EvaluationError(f"image directory {images_dir} does not exist")
    out: list[GroundTruthImage] = []
    missing: list[str] = []
    for entry in coco["images"]:
        try:
            path = images_dir / entry["file_name"]
            item = GroundTruthImage(
                int(entry["id"]), path, int(entry.get("width", 0)), int(entry.get("height", 0))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationError(f"malformed image entry {entry!r}: {exc}") from exc
        if not path.is_file():
            missing.append(str(entry["file_name"]))
        out.append(item)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EvaluationError(
            f"{len(missing)} of {len(out)} images listed in the annotations are missing "
            f"under {images_dir}: {shown}"
        )
    return out


# -- detections -> COCO results ---------------------------------------------------------------


def category_id(class_id: int) -> int:
    """COCO category of a detector class (0 mask -> 1, 1 no mask -> 2)."""
    try:
        return CLASS_TO_CATEGORY[int(class_id)]
    except KeyError:
        raise ValueError(f"unknown detector class_id {class_id}") from None


def coco_boxes(
    detections: Detections, width: int, height: int, *, unrounded: bool = False
) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes ``[N, 4]`` (float64 pixels) on a ``width`` x ``height`` image.

    Default: the integer boxes ``detect`` prints (:meth:`Detections.pixels`: truncated,
    clipped). ``unrounded``: the float boxes ``xyxy * size`` clipped to the image.
    """
    if unrounded:
        xyxy = detections.pixels_float(width, height)
    else:
        xyxy = detections.pixels(width, height).astype(np.float64)
    wh = np.maximum(xyxy[:, 2:] - xyxy[:, :2], 0.0)
    return np.concatenate([xyxy[:, :2], wh], axis=1)


def to_coco_results(
    image_id: int,
    detections: Detections,
    width: int,
    height: int,
    *,
    unrounded: bool = False,
) -> list[dict[str, Any]]:
    """COCO result dicts (``image_id``, ``category_id``, ``bbox``, ``score``) of one image."""
    boxes = coco_boxes(detections, width, height, unrounded=unrounded).tolist()
    return [
        {
            "image_id": image_id,
            "category_id": category_id(class_id),
            "bbox": box,
            "score": score,
        }
        for class_id, box, score in zip(
            detections.class_ids.tolist(), boxes, detections.scores.tolist(), strict=True
        )
    ]


# -- scoring ------------------------------------------------------------------------------


def coco_metrics(
    coco_gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> tuple[list[float], dict[str, dict[str, float]]]:
    """pycocotools bbox evaluation: the 12 ``COCOeval.stats`` and per-category AP / AP50.

    pycocotools' own progress prints are swallowed so that stdout stays clean.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # per-class keys: the detector's names for its categories, else the file's names
    names = {
        int(c["id"]): CATEGORY_NAMES.get(int(c["id"]), str(c.get("name", c["id"])))
        for c in coco_gt["categories"]
    }
    if not results:
        # loadRes rejects an empty list; nothing detected scores 0 on every category with boxes
        logger.warning("no detections to score")
        zero = {name: {"AP50": 0.0, "AP": 0.0} for name in names.values()}
        return [0.0] * 12, zero
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        gt = COCO()
        gt.dataset = {
            "images": list(coco_gt["images"]),
            "annotations": [_complete_annotation(a) for a in coco_gt["annotations"]],
            "categories": list(coco_gt["categories"]),
        }
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("pycocotools output:\n%s", sink.getvalue())
    stats = [float(v) for v in evaluator.stats]
    # precision: [iou thresholds T, recall R, categories K, area ranges A, max dets M]
    precision = evaluator.eval["precision"]
    area_all = list(evaluator.params.areaRngLbl).index("all")
    last_max_det = len(evaluator.params.maxDets) - 1
    iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
    per_class: dict[str, dict[str, float]] = {}
    for k, cat in enumerate(evaluator.params.catIds):
        every_iou = precision[:, :, k, area_all, last_max_det]
        at50 = precision[iou50, :, k, area_all, last_max_det]
        per_class[names.get(int(cat), str(cat))] = {
            "AP50": _mean_valid(at50),
            "AP": _mean_valid(every_iou),
        }
    return stats, per_class


def _complete_annotation(annotation: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with COCOeval's required ``area`` and ``iscrowd`` filled in when absent."""
    out = dict(annotation)
    out.setdefault("iscrowd", 0)
    if "area" not in out:
        _, _, w, h = out["bbox"]
        out["area"] = float(w) * float(h)
    return out


def _mean_valid(values: np.ndarray) -> float:
    """COCO's convention: mean over entries > -1, -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


# -- running the detector -------------------------------------------------------------------


def get_detector(runtime: str = "tensorflow", **runtime_options: Any) -> Detector:
    """A detector per ``(runtime, options)``, made once per process and reused."""
    key = (runtime, tuple(sorted(runtime_options.items())))
    detector = _DETECTORS.get(key)
    if detector is None:
        from facemask.model.detector import create_detector

        detector = create_detector(runtime=runtime, **runtime_options)
        _DETECTORS[key] = detector
    return detector


@dataclass(frozen=True, slots=True)
class ImageDetections:
    """The detections of one annotated image and the image's original size."""

    image_id: int
    width: int
    height: int
    detections: Detections


ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` of ``total`` images have their detections."""


def _decoded(item: GroundTruthImage, decode: str) -> DecodedImage:
    """The image of ``item`` (:class:`EvaluationError` when unreadable), its size checked
    against the annotations (a warning: scoring uses the image's own size)."""
    try:
        image = decode_image(item.path.read_bytes(), reduce=decode)
    except (OSError, ImageDecodeError) as exc:
        raise EvaluationError(f"cannot read image {item.path}: {exc}") from exc
    declared = (item.width, item.height)
    if all(declared) and (image.width, image.height) != declared:
        logger.warning(
            "%s is %dx%d but the annotations say %dx%d; scoring in the image's size",
            item.path,
            image.width,
            image.height,
            item.width,
            item.height,
        )
    return image


def _model_runs(
    images: Sequence[GroundTruthImage], decode: str, batch_size: int, tiles: TileSpec | None
) -> Iterator[list[tuple[GroundTruthImage, DecodedImage]]]:
    """The images decoded, in chunks of one model run each: at most ``batch_size`` model
    inputs (an image untiled, its windows tiled), so that finishing a chunk is finishing
    a batch of the model (an image with more windows than that is a chunk of its own)."""
    chunk: list[tuple[GroundTruthImage, DecodedImage]] = []
    inputs = 0
    for item in images:
        image = _decoded(item, decode)
        windows = len(tile_windows(image.width, image.height, tiles))
        if chunk and inputs + windows > batch_size:
            yield chunk
            chunk, inputs = [], 0
        chunk.append((item, image))
        inputs += windows
    if chunk:
        yield chunk


def detect_images(
    coco: Mapping[str, Any],
    images_dir: str | Path,
    detector: Detector,
    *,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode: str = "full",
    progress: ProgressCallback | None = None,
    tiles: TileSpec | None = None,
) -> list[ImageDetections]:
    """Run ``detector`` on every image of ``coco`` (files under ``images_dir``).

    ``tiles``: tiled inference (the full frame plus a grid of tiles, merged by NMS; see
    :mod:`facemask.core.tiling`); None runs exactly the untiled detector.

    Images are decoded (``decode``: ``full`` is exactly the reference; ``auto`` may decode
    large JPEGs at a reduced scale) and detected one model batch at a time - ``batch_size``
    images, or with ``tiles`` the images whose windows fill at most ``batch_size`` model
    inputs - so memory stays bounded on large sets. ``progress(done, total)`` is called
    after each batch with the images whose detections are done. Raises
    :class:`EvaluationError` for missing or unreadable files.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, not {decode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    images = ground_truth_images(coco, images_dir)
    out: list[ImageDetections] = []
    for chunk in _model_runs(images, decode, batch_size, tiles):
        per_image = detector.detect(
            [image.rgb for _, image in chunk],
            conf=conf,
            iou=iou,
            batch_size=batch_size,
            tiles=tiles,
            sizes=[(image.width, image.height) for _, image in chunk],
        )
        for (item, image), dets in zip(chunk, per_image, strict=True):
            out.append(ImageDetections(item.image_id, image.width, image.height, dets))
        if progress is not None:
            progress(len(out), len(images))
    return out


def score(
    coco: Mapping[str, Any],
    detections: Sequence[ImageDetections],
    *,
    unrounded: bool = False,
) -> EvalResult:
    """COCO metrics of ``detections`` against the ground truth ``coco``."""
    results: list[dict[str, Any]] = []
    for item in detections:
        results.extend(
            to_coco_results(
                item.image_id, item.detections, item.width, item.height, unrounded=unrounded
            )
        )
    started = time.perf_counter()
    stats, per_class = coco_metrics(coco, results)
    logger.debug("COCOeval of %d detections: %.1f s", len(results), time.perf_counter() - started)
    values = dict(zip(_STAT_KEYS, stats, strict=False))
    return EvalResult(
        ap=values["AP"],
        ap50=values["AP50"],
        ap75=values["AP75"],
        ap_small=values["AP_small"],
        ap_medium=values["AP_medium"],
        ap_large=values["AP_large"],
        per_class=per_class,
        images=len(detections),
        detections=len(results),
        seconds=0.0,  # set by evaluate(), which times detection and scoring
        stats=stats,
    )


def evaluate(
    annotations: str | Path | Mapping[str, Any],
    images_dir: str | Path,
    *,
    detector: Detector | None = None,
    runtime: str = "tensorflow",
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    unrounded: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode: str = "full",
    progress: ProgressCallback | None = None,
    tiles: TileSpec | None = None,
) -> EvalResult:
    """Detect on every annotated image and score the detections with COCOeval.

    ``annotations`` is a COCO file (or its parsed dict); image files are looked up under
    ``images_dir`` by ``file_name``. ``seconds`` of the result covers decoding, detection and
    scoring (not making the detector). Raises :class:`EvaluationError` for bad inputs.
    """
    coco = dict(annotations) if isinstance(annotations, Mapping) else load_annotations(annotations)
    if detector is None:
        ground_truth_images(coco, images_dir)  # fail on missing files before loading a model
        detector = get_detector(runtime)
    started = time.perf_counter()
    per_image = detect_images(
        coco,
        images_dir,
        detector,
        conf=conf,
        iou=iou,
        batch_size=batch_size,
        decode=decode,
        progress=progress,
        tiles=tiles,
    )
    detect_s = time.perf_counter() - started
    result = score(coco, per_image, unrounded=unrounded)
    seconds = time.perf_counter() - started
    logger.debug(
        "evaluated %d images, %d detections: detection %.1f s, scoring %.1f s",
        result.images,
        result.detections,
        detect_s,
        seconds - detect_s,
    )
    return dataclasses.replace(result, seconds=seconds)


def format_table(result: EvalResult) -> str:
    """The human-readable report of ``facemask eval``."""
    rows = [
        ("AP@[.5:.95]", result.ap),
        ("AP50", result.ap50),
        ("AP75", result.ap75),
        ("AP_small", result.ap_small),
        ("AP_medium", result.ap_medium),
        ("AP_large", result.ap_large),
    ]
    rows += [(f"AP50 {name}", values["AP50"]) for name, values in result.per_class.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value:.3f}" for name, value in rows]
    lines.append(f"{result.images} images, {result.detections} detections, {result.seconds:.1f} s")
    return "\n".join(lines) + "\n"
