"""Training data: COCO sets of labelled faces, checked and decoded once into memory, and
the unlabelled frames of the distillation term.

A labelled set is a COCO annotation file and the directory of its images - the layout of
``../shared/data/facemask-train``, ``facemask-dev`` and of ``facemask dataset export
--reviewed`` (``DIR/annotations.json`` + ``DIR/images``). Categories are matched by
*name*: ``mask`` is class 0 and ``no_mask`` class 1, whatever their ids. An image without
any face is a valid negative (the export writes one for a false positive whose only face
was not a person's).

:func:`load_dataset` refuses a bad set with one :class:`DatasetError` naming what is
wrong and where: a missing or malformed file, no images, no face at all, image files
missing, unreadable or of another size than declared, boxes outside the image (more than
:data:`BOX_TOLERANCE_PX` beyond an edge) or of a negative size, unknown categories, and
annotations of images the file does not list. Every problem of a kind is counted, the
first few named. A box of zero width or height (a face the export truncated to nothing)
is skipped with a warning: nothing can learn from it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemask.core.capture import CaptureSpec, capture_frame_count, open_capture
from facemask.core.preprocess import IMAGE_FORMATS, ImageDecodeError, decode_image, read_image_file
from facemask.core.types import LABEL_IDS
from facemask.model.store import sha256_file

logger = logging.getLogger(__name__)

BOX_TOLERANCE_PX = 1.0
"""How far (pixels) a box may reach beyond an image edge: exports clip to the image, some
tools round a box's far edge up by one pixel."""
SHOWN = 5
"""Problems of one kind named in an error message (the rest are counted)."""
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(ValueError):
    """A training or distillation input that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A labelled set: a COCO annotation file and the directory holding its images."""

    annotations: Path
    images: Path

    @property
    def name(self) -> str:
        """The set's name: its directory (``facemask-train``), else the file's stem."""
        parent = self.annotations.resolve().parent
        return parent.name if self.annotations.name == "annotations.json" else self.annotations.stem


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """One decoded image and its faces.

    ``rgb`` uint8 ``[h, w, 3]`` (possibly scaled down from the file, see
    :func:`load_dataset`); ``boxes`` float32 ``[N, 4]`` image-relative ``x1, y1, x2, y2``;
    ``labels`` int64 ``[N]`` class ids (0 mask, 1 no_mask).
    """

    path: Path
    rgb: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True, slots=True)
class LabeledSet:
    """The images of one or more labelled sets and what the model card says of each."""

    images: list[LabeledImage]
    sources: list[dict[str, Any]]
    """``{name, annotations, annotations_sha256, images, faces}`` per set, in input order."""

    @property
    def faces(self) -> int:
        """Faces in all images."""
        return sum(len(item.labels) for item in self.images)


@dataclass(frozen=True, slots=True)
class _Entry:
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


def _problem(kind: str, items: Sequence[str], of: int | None = None) -> str:
    shown = ", ".join(items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")
    count = f"{len(items)} of {of}" if of is not None else str(len(items))
    return f"{count} {kind}: {shown}"


def read_coco(path: Path) -> dict[str, Any]:
    """The parsed COCO file (``images``, ``annotations``, ``categories`` lists)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"annotation file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read annotation file {path}: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{path} is not COCO: it needs lists 'images', 'annotations' and 'categories'"
        )
    return raw


def _class_of_category(coco: dict[str, Any], where: str) -> dict[Any, int]:
    """``{category id: class id}``; unknown names are an error."""
    classes: dict[Any, int] = {}
    unknown: list[str] = []
    for category in coco["categories"]:
        if not isinstance(category, dict) or "id" not in category:
            raise DatasetError(f"{where}: malformed category {category!r}")
        name = str(category.get("name", ""))
        if name in LABEL_IDS:
            classes[category["id"]] = LABEL_IDS[name]
        else:
            unknown.append(f"{category['id']} {name!r}")
    if unknown:
        raise DatasetError(
            f"{where}: unknown categories {', '.join(unknown)}; the detector knows "
            f"{', '.join(repr(n) for n in LABEL_IDS)} (rename or drop the others)"
        )
    return classes


def parse_coco(coco: dict[str, Any], images_dir: Path, where: str) -> list[_Entry]:
    """The images of ``coco`` with their boxes, every problem checked (not the files'
    contents: :func:`load_dataset` decodes them)."""
    classes = _class_of_category(coco, where)
    if not coco["images"]:
        raise DatasetError(f"{where}: the set is empty (no images)")
    sizes: dict[Any, tuple[Path, int, int]] = {}
    for entry in coco["images"]:
        try:
            path = images_dir / str(entry["file_name"])
            width, height = int(entry["width"]), int(entry["height"])
            sizes[entry["id"]] = (path, width, height)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{where}: malformed image entry {entry!r} (needs id, file_name, width, height)"
            ) from None
        if width <= 0 or height <= 0:
            raise DatasetError(f"{where}: image {entry['file_name']} has size {width}x{height}")
    boxes: dict[Any, list[list[float]]] = {key: [] for key in sizes}
    labels: dict[Any, list[int]] = {key: [] for key in sizes}
    unknown_category: list[str] = []
    unknown_image: list[str] = []
    outside: list[str] = []
    malformed: list[str] = []
    empty: list[str] = []
    for annotation in coco["annotations"]:
        try:
            image_id, category = annotation["image_id"], annotation["category_id"]
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{where}: malformed annotation {annotation!r} (needs image_id, category_id "
                "and bbox [x, y, w, h])"
            ) from None
        name = f"annotation {annotation.get('id', '?')}"
        if category not in classes:
            unknown_category.append(f"{name} (category {category!r})")
            continue
        if image_id not in sizes:
            unknown_image.append(f"{name} (image {image_id!r})")
            continue
        path, width, height = sizes[image_id]
        if w < 0 or h < 0 or not (math.isfinite(x + y + w + h)):
            malformed.append(f"{name} in {path.name} [{x:g}, {y:g}, {w:g}, {h:g}]")
            continue
        if w == 0 or h == 0:
            empty.append(f"{name} in {path.name}")
            continue
        tol = BOX_TOLERANCE_PX
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            outside.append(f"{name} in {path.name} [{x:g}, {y:g}, {w:g}, {h:g}] ({width}x{height})")
            continue
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(width)), min(y + h, float(height))
        boxes[image_id].append([x1 / width, y1 / height, x2 / width, y2 / height])
        labels[image_id].append(classes[category])
    problems = [
        _problem("annotations of unknown categories", unknown_category) if unknown_category else "",
        _problem("annotations of images the file does not list", unknown_image)
        if unknown_image
        else "",
        _problem("boxes outside the image", outside) if outside else "",
        _problem("boxes with a negative or non-finite size", malformed) if malformed else "",
    ]
    if any(problems):
        raise DatasetError(f"{where}: " + "; ".join(p for p in problems if p))
    if empty:
        logger.warning(
            "boxes without area skipped",
            extra={"annotations": where, "count": len(empty), "first": empty[:SHOWN]},
        )
    if not any(labels.values()):
        raise DatasetError(f"{where}: the set is empty (no annotated faces)")
    missing = [str(path.name) for path, _, _ in sizes.values() if not path.is_file()]
    if missing:
        raise DatasetError(
            f"{where}: " + _problem(f"images missing under {images_dir}", missing, len(sizes))
        )
    return [
        _Entry(
            path,
            width,
            height,
            np.asarray(boxes[key], dtype=np.float32).reshape(-1, 4),
            np.asarray(labels[key], dtype=np.int64),
        )
        for key, (path, width, height) in sizes.items()
    ]


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` scaled down (area interpolation) so that its longer side is ``max_side``."""
    longer = max(rgb.shape[:2])
    if longer <= max_side:
        return rgb
    scale = max_side / longer
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def _decode(entry: _Entry, max_side: int) -> np.ndarray | str:
    """The image of ``entry`` (RGB uint8, at most ``max_side`` on its longer side), or why
    it cannot be used."""
    try:
        data = read_image_file(entry.path, formats=IMAGE_FORMATS)
        image = decode_image(data, reduce="full", formats=IMAGE_FORMATS)
    except (OSError, ImageDecodeError) as exc:
        return f"{entry.path.name} ({exc})"
    if (image.width, image.height) != (entry.width, entry.height):
        return (
            f"{entry.path.name} (is {image.width}x{image.height}, the annotations say "
            f"{entry.width}x{entry.height})"
        )
    return _fit(image.rgb, max_side)


def load_dataset(
    specs: Iterable[DatasetSpec], *, max_side: int = 1040, workers: int = 2
) -> LabeledSet:
    """The images of every set in ``specs``, decoded once (scaled down to at most
    ``max_side`` pixels on the longer side: boxes are image-relative, so they still fit;
    the crops of training see no more detail than that). Raises :class:`DatasetError`
    (see the module docstring)."""
    specs = list(specs)
    if not specs:
        raise DatasetError("no training set given")
    images: list[LabeledImage] = []
    sources: list[dict[str, Any]] = []
    for spec in specs:
        where = str(spec.annotations)
        if not spec.images.is_dir():
            raise DatasetError(f"{where}: image directory {spec.images} does not exist")
        entries = parse_coco(read_coco(spec.annotations), spec.images, where)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            decoded = list(pool.map(lambda e: _decode(e, max_side), entries))
        bad = [d for d in decoded if isinstance(d, str)]
        if bad:
            raise DatasetError(f"{where}: " + _problem("images unusable", bad, len(entries)))
        for entry, rgb in zip(entries, decoded, strict=True):
            assert isinstance(rgb, np.ndarray)
            images.append(LabeledImage(entry.path, rgb, entry.boxes, entry.labels))
        sources.append(
            {
                "name": spec.name,
                "annotations": str(spec.annotations),
                "annotations_sha256": sha256_file(spec.annotations),
                "images": len(entries),
                "faces": int(sum(len(e.labels) for e in entries)),
            }
        )
        logger.info(
            "training set loaded",
            extra={"dataset": spec.name, "images": len(entries), "faces": sources[-1]["faces"]},
        )
    return LabeledSet(images, sources)


# -- unlabelled frames ---------------------------------------------------------------


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over the video at ``path`` (RGB uint8), first and
    last included; only the picked frames are kept while reading."""
    capture = open_capture(CaptureSpec("path", str(path)))
    try:
        if not capture.isOpened():
            raise DatasetError(f"cannot open video {path}")
        total = capture_frame_count(capture)
        if total is None:
            raise DatasetError(f"video {path} declares no frame count")
        picks = set(np.linspace(0, total - 1, num=min(count, total)).round().astype(int).tolist())
        frames: list[np.ndarray] = []
        for index in range(total):
            ok, bgr = capture.read()
            if not ok:
                break
            if index in picks:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DatasetError(f"video {path} has no readable frame")
    return frames


def _image_frame(path: Path) -> np.ndarray:
    try:
        return decode_image(
            read_image_file(path, formats=IMAGE_FORMATS), reduce="full", formats=IMAGE_FORMATS
        ).rgb
    except (OSError, ImageDecodeError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def load_frames(
    sources: Iterable[Path], *, per_video: int = 64, max_side: int = 1040
) -> list[np.ndarray]:
    """Unlabelled RGB frames: ``per_video`` frames spread over each video, every image of
    each directory (sorted by name), and each image file given, in input order (at most
    ``max_side`` on the longer side)."""
    frames: list[np.ndarray] = []
    for given in sources:
        source = Path(given)
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DatasetError(f"unlabelled frames: {source} holds no image")
            frames.extend(_image_frame(p) for p in files)
        elif source.suffix.lower() in VIDEO_SUFFIXES:
            if not source.is_file():
                raise DatasetError(f"unlabelled frames: video {source} does not exist")
            frames.extend(_video_frames(source, per_video))
        elif source.is_file():
            frames.append(_image_frame(source))
        else:
            raise DatasetError(f"unlabelled frames: {source} does not exist")
    return [_fit(frame, max_side) for frame in frames]
