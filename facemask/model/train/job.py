"""A whole training job, from the data to a registered model version.

:func:`run_job`:

1. loads and checks every labelled set (:func:`~facemask.model.train.data.load_dataset`)
   and the dev set, and the unlabelled frames when given;
2. builds the student from the parent (``upstream`` or a stored version) with
   :func:`facemask.model.ssd.build_ssd` (``logits=True``), and the teacher - the upstream
   model at the same input size - whose outputs on the unlabelled frames (every other
   frame; the rest are held out) are the distillation targets;
3. trains (:class:`~facemask.model.train.loop.Trainer`), or resumes;
4. takes the best epoch's weights, exports them (:func:`facemask.model.export.
   export_version`: ``model.pb``, TFLite float32 and int8 calibrated on the training
   images)
   into ``OUT/export/``, measures no-forgetting on the held-out frames (and on the dev
   images) against the upstream model, writes the model card and adds the version to
   the registry (:class:`facemask.model.registry.ModelRegistry`); the card is also kept
   as ``OUT/card.json``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemask.model import evaluation
from facemask.model.detector import Detector
from facemask.model.train.data import (
    DatasetError,
    DatasetSpec,
    LabeledSet,
    load_dataset,
    load_frames,
)
from facemask.model.train.forgetting import no_forgetting
from facemask.model.train.loop import (
    EpochHook,
    KerasRuntime,
    ProgressHook,
    Recipe,
    Trainer,
    TrainError,
    images_per_second,
    write_json,
)
from facemask.model.train.pipeline import DistillData

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
CARD_FILE = "card.json"
"""The card as training wrote it (without the registry's version, files and created)."""


@dataclass
class TrainJob:
    """What ``facemask train`` was asked to do."""

    train: Sequence[DatasetSpec]
    dev: DatasetSpec
    out: Path
    recipe: Recipe = field(default_factory=Recipe)
    parent: str = "upstream"
    unlabelled: Sequence[Path] = ()
    resume: bool = False
    register: bool = True
    registry_root: Path | None = None


@dataclass
class JobResult:
    """A finished job: the version (None when not registered), where its files are, its
    card and the run's history."""

    version: str | None
    path: Path
    card: dict[str, Any]
    history: list[Any]


def _split_frames(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every other frame for distillation, the rest held out for the no-forgetting measure."""
    return frames[0::2], frames[1::2]


def _parent_weights(job: TrainJob) -> tuple[str, Path | None]:
    """The parent's version id and frozen graph (None: the cached upstream graph)."""
    from facemask.model.registry import UPSTREAM, ModelRegistry, RegistryError

    if job.parent == UPSTREAM:
        return UPSTREAM, None
    try:
        parent = ModelRegistry(job.registry_root).get(job.parent)
        return parent.version, parent.file("tf")
    except RegistryError as exc:
        raise TrainError(f"--from {job.parent}: {exc}") from None


def _upstream_detector() -> Detector:
    """The upstream model as deployed (260x260), as the Keras model that equals its frozen
    graph (one TensorFlow in the process, already initialised by training)."""
    from facemask.model.registry import UPSTREAM_INPUT_SIZE
    from facemask.model.ssd import build_ssd

    size = UPSTREAM_INPUT_SIZE
    return Detector(KerasRuntime(build_ssd(size, logits=True), size), model_sha256="")


def _dev_frames(dev: DatasetSpec) -> list[np.ndarray]:
    """The dev set's images (for the no-forgetting measure on labelled-like data)."""
    from facemask.core.preprocess import decode_image

    coco = evaluation.load_annotations(dev.annotations)
    return [
        decode_image(item.path.read_bytes(), reduce="full").rgb
        for item in evaluation.ground_truth_images(coco, dev.images)
    ]


def build_job_record(job: TrainJob, data: LabeledSet, parent: str) -> dict[str, Any]:
    """What ``run.json`` records of the job's inputs (compared on resume)."""
    return {
        "parent": parent,
        "datasets": data.sources,
        "dev": {
            "name": job.dev.name,
            "annotations_sha256": _sha256(job.dev.annotations),
        },
        "unlabelled": [str(p) for p in job.unlabelled],
    }


def _sha256(path: Path) -> str:
    from facemask.model.store import sha256_file

    return sha256_file(path)


def exported_variant_ap50(
    files: dict[str, Path], dev: DatasetSpec, float32_ap50: float
) -> dict[str, float]:
    """Dev-set AP50 of every exported variant (``runtime-precision`` keys of
    :mod:`facemask.model.variants`), scored with ``facemask eval``'s code: TensorFlow
    float32 is the trained model's best epoch; each TFLite file is evaluated, so the
    ``auto`` runtime can choose int8 for this version only where it keeps the accuracy."""
    from facemask.model.detector import create_detector

    out = {"tensorflow-float32": round(float32_ap50, 4)}
    for variant in ("float32", "int8"):
        path = files.get(variant)
        if path is None:
            continue
        detector = create_detector("tflite", model_path=path, variant=variant)
        try:
            result = evaluation.evaluate(dev.annotations, dev.images, detector=detector)
        finally:
            detector.close()
        out[f"tflite-{variant}"] = round(float(result.ap50), 4)
        logger.info(
            "exported variant scored",
            extra={"variant": variant, "dev_ap50": out[f"tflite-{variant}"]},
        )
    return out


def run_job(
    job: TrainJob,
    *,
    on_step: ProgressHook | None = None,
    on_epoch: EpochHook | None = None,
) -> JobResult:
    """Run ``job`` (see the module docstring). Raises :class:`TrainError` or
    :class:`DatasetError` with the reason when it cannot."""
    from facemask.model.ssd import build_ssd

    recipe = job.recipe
    started = time.perf_counter()
    run_file = job.out / "run.json"
    if run_file.exists() and not job.resume:
        raise TrainError(
            f"{job.out} already holds a training run: --resume to continue it, or another --out"
        )
    data = load_dataset(job.train, max_side=4 * recipe.input_size)
    try:
        evaluation.ground_truth_images(
            evaluation.load_annotations(job.dev.annotations), job.dev.images
        )
    except evaluation.EvaluationError as exc:
        raise DatasetError(f"dev set: {exc}") from None
    parent, weights = _parent_weights(job)
    frames = (
        load_frames(job.unlabelled, per_video=2 * recipe.frames_per_video) if job.unlabelled else []
    )
    distill_frames, held_out = _split_frames(frames)
    if not distill_frames:
        logger.warning(
            "no unlabelled frames: training without the distillation term (nothing guards "
            "the upstream conventions)"
        )
    model = build_ssd(recipe.input_size, weights=weights, logits=True)
    distill = None
    if distill_frames and recipe.distill_weight > 0:
        teacher = build_ssd(recipe.input_size, logits=False)

        def run_teacher(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            loc, score = teacher(batch, training=False)
            return loc.numpy(), score.numpy()

        distill = DistillData.build(
            distill_frames,
            run_teacher,
            input_size=recipe.input_size,
            batch_size=recipe.distill_batch,
            seed=recipe.seed,
            jitter=recipe.augment,
        )
        del teacher
    trainer = Trainer(
        model=model,
        recipe=recipe,
        data=data,
        dev=job.dev,
        out=job.out,
        job=build_job_record(job, data, parent),
        distill=distill,
    )
    if job.resume:
        trainer.restore()
    history = trainer.run(on_step=on_step, on_epoch=on_epoch)
    trainer.load_best()
    dev_metrics = trainer.best_metrics()

    trained = Detector(KerasRuntime(model, recipe.input_size), model_sha256="")
    upstream = _upstream_detector()
    forgetting: dict[str, Any] = {}
    if held_out:
        forgetting["held_out_frames"] = no_forgetting(upstream, trained, held_out)
    forgetting["dev_images"] = no_forgetting(upstream, trained, _dev_frames(job.dev))

    export_dir = job.out / EXPORT_DIR
    export_dir.mkdir(parents=True, exist_ok=True)
    from facemask.model.export import export_version

    calibration = [item.path for item in data.images]
    files = export_version(model, export_dir, calibration=calibration, input_size=recipe.input_size)
    variant_ap50 = exported_variant_ap50(files, job.dev, float(dev_metrics["ap50"]))
    wall = time.perf_counter() - started
    card: dict[str, Any] = {
        "parent": parent,
        "datasets": [
            {k: s[k] for k in ("name", "annotations_sha256", "images", "faces")}
            for s in data.sources
        ],
        "dev_set": trainer.job["dev"],
        "recipe": recipe.to_json(),
        "input_size": recipe.input_size,
        "metrics": {"dev": dev_metrics, "variants": variant_ap50, "no_forgetting": forgetting},
        "training": {
            "epochs": len(history),
            "best_epoch": trainer.best_epoch,
            "wall_seconds": round(wall, 1),
            "images_per_second": round(images_per_second(history), 2),
            "machine": platform.machine(),
            "unlabelled": [str(p) for p in job.unlabelled],
            "distillation_frames": len(distill_frames),
            "held_out_frames": len(held_out),
        },
    }
    write_json(job.out / CARD_FILE, card)
    if not job.register:
        return JobResult(None, export_dir, card, history)
    from facemask.model.registry import ModelRegistry

    version = ModelRegistry(job.registry_root).add(files, card)
    logger.info(
        "model version registered",
        extra={
            "version": version.version,
            "path": str(version.path),
            **{f"dev_{k}": round(float(v), 4) for k, v in dev_metrics.items() if k != "epoch"},
        },
    )
    return JobResult(version.version, version.path, version.card, history)
