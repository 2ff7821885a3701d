"""The training loop of ``facemask train``: recipe, epochs, validation, checkpoints, resume.

A run lives in its output directory (``--out``)::

    OUT/run.json            the job, the recipe, every finished epoch's losses and dev
                            metrics, the best epoch (rewritten atomically after each epoch)
    OUT/checkpoints/        the latest epoch's model and optimizer (resume point)
    OUT/best.weights.h5     the weights of the best epoch so far (highest dev AP50)

Each epoch trains on every labelled image once (augmented, in a seeded order), plus
distillation batches of unlabelled frames when there are any, then scores the model on
the dev set with :func:`facemask.model.evaluation.evaluate` - the very code of ``facemask
eval`` (pycocotools, integer boxes) - through a :class:`KerasRuntime`. The best epoch by
dev AP50 is kept; selection never looks at the training set's own scores.

``resume`` continues a run from its last finished epoch with the same job and recipe (a
changed one is refused): the per-sample random generators are seeded by epoch, so the
resumed run sees the batches an uninterrupted one would have.

The recipe's defaults are the one ``make train`` runs (README, "Training your own model").
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemask.core.anchors import generate_anchors
from facemask.model import evaluation
from facemask.model.detector import Detector
from facemask.model.native import import_tensorflow
from facemask.model.quantize import write_atomically
from facemask.model.train.augment import AugmentConfig
from facemask.model.train.data import DatasetSpec, LabeledSet
from facemask.model.train.pipeline import DistillData, LabelledData

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
BEST_WEIGHTS = "best.weights.h5"
CHECKPOINTS = "checkpoints"


class TrainError(RuntimeError):
    """A run that cannot start or continue, with the reason."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights besides the data (on the model card)."""

    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_epochs: float = 1.0
    final_lr_fraction: float = 0.02
    """The cosine decay ends at this fraction of ``learning_rate``."""
    input_size: int = 260
    seed: int = 0
    distill_weight: float = 1.0
    distill_batch: int = 4
    frames_per_video: int = 64
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_json(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict."""
        out = asdict(self)
        out["augment"] = self.augment.to_json()
        return out


class KerasRuntime:
    """A :class:`~facemask.model.runtime.base.Runtime` over a Keras model of
    :func:`facemask.model.ssd.build_ssd` giving logits (``logits=True``): the sigmoid is
    applied here, so a :class:`Detector` on it scores exactly as on an exported file."""

    name = "keras"
    max_batch_size: int | None = None

    def __init__(self, model: Any, input_size: int) -> None:
        tf = import_tensorflow()
        self.input_size = (input_size, input_size)
        self._model = model

        @tf.function(reduce_retracing=True)
        def forward(batch: Any) -> tuple[Any, Any]:
            loc, logits = model(batch, training=False)
            return loc, tf.sigmoid(logits)

        self._forward = forward

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs of a pre-processed batch."""
        loc, cls = self._forward(np.ascontiguousarray(batch, dtype=np.float32))
        return loc.numpy(), cls.numpy()

    def close(self) -> None:
        """Nothing to release (the model belongs to the caller)."""


def learning_rate_schedule(recipe: Recipe, steps_per_epoch: int) -> Any:
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_epochs``, then cosine
    decay to ``final_lr_fraction`` of it at the last step."""
    import keras

    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(total - 1, max(0, round(recipe.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, total - warmup),
        alpha=recipe.final_lr_fraction,
        warmup_target=recipe.learning_rate,
        warmup_steps=warmup,
    )


@dataclass
class EpochResult:
    """One finished epoch."""

    epoch: int
    loss: dict[str, float]
    dev: dict[str, Any]
    seconds: float
    """Training and validation."""
    train_seconds: float
    images: int

    def to_json(self) -> dict[str, Any]:
        """As stored in ``run.json``."""
        return asdict(self)


ProgressHook = Callable[[int, int, dict[str, float]], None]
"""``hook(step_done, steps_total, losses)`` after every training step of the run."""
EpochHook = Callable[[EpochResult, bool], None]
"""``hook(result, is_best)`` after every epoch's validation."""


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class Trainer:
    """One training run (see the module docstring).

    ``model`` is the student (``build_ssd(..., logits=True)`` with the parent's weights);
    ``job`` is what ``run.json`` records of the inputs (datasets with their hashes, the
    parent), compared on resume.
    """

    model: Any
    recipe: Recipe
    data: LabeledSet
    dev: DatasetSpec
    out: Path
    job: dict[str, Any]
    distill: DistillData | None = None
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_ap50: float = -1.0

    def __post_init__(self) -> None:
        tf = import_tensorflow()
        import keras

        self.anchors = generate_anchors(input_size=(self.recipe.input_size,) * 2)
        self.labelled = LabelledData(
            self.data.images,
            self.anchors,
            self.recipe.input_size,
            self.recipe.augment,
            self.recipe.seed,
        )
        self.steps_per_epoch = self.labelled.steps(self.recipe.batch_size)
        self.optimizer = keras.optimizers.Adam(
            learning_rate_schedule(self.recipe, self.steps_per_epoch)
        )
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.out / CHECKPOINTS), max_to_keep=1
        )
        self.dev_coco = evaluation.load_annotations(self.dev.annotations)
        evaluation.ground_truth_images(self.dev_coco, self.dev.images)
        self._step = self._make_step()
        # one runtime for every validation: its traced function is reused
        self._detector = Detector(
            KerasRuntime(self.model, self.recipe.input_size),
            model_version="training",
            model_sha256="",
        )

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What ``run.json`` holds."""
        return {
            "job": self.job,
            "recipe": self.recipe.to_json(),
            "epochs_done": len(self.history),
            "steps_per_epoch": self.steps_per_epoch,
            "history": [h.to_json() for h in self.history],
            "best": {"epoch": self.best_epoch, "ap50": self.best_ap50},
        }

    def restore(self) -> None:
        """Continue the run in ``out`` (:class:`TrainError` when there is none, or its job
        or recipe differ from this one)."""
        path = self.out / RUN_FILE
        if not path.is_file():
            raise TrainError(f"nothing to resume: {path} does not exist")
        saved = json.loads(path.read_text())
        if saved.get("recipe") != self.recipe.to_json():
            raise TrainError(
                f"{self.out} was trained with another recipe; resume with the same one"
            )
        if saved.get("job") != self.job:
            raise TrainError(
                f"{self.out} was trained on other data or from another parent; resume with the "
                "same --data / --from"
            )
        latest = self.manager.latest_checkpoint
        if latest is None:
            raise TrainError(f"{self.out} holds no checkpoint to resume from")
        self.checkpoint.restore(latest).expect_partial()
        self.history = [EpochResult(**h) for h in saved["history"]][: int(self.epoch.numpy())]
        self.best_epoch = int(saved["best"]["epoch"])
        self.best_ap50 = float(saved["best"]["ap50"])
        logger.info(
            "resuming training", extra={"out": str(self.out), "epochs_done": len(self.history)}
        )

    # -- one step ------------------------------------------------------------------------

    def _make_step(self) -> Any:
        tf = import_tensorflow()
        from facemask.model.train.loss import distillation_loss, multibox_loss

        model, optimizer = self.model, self.optimizer
        weight = tf.constant(self.recipe.distill_weight, tf.float32)

        def losses(images: Any, loc_t: Any, cls_t: Any, extra: tuple[Any, ...]) -> dict[str, Any]:
            if extra:
                d_images, d_loc, d_cls = extra
                loc, logits = model(tf.concat([images, d_images], axis=0), training=True)
                n = tf.shape(images)[0]
                labelled = multibox_loss(loc_t, cls_t, loc[:n], logits[:n])
                distilled = distillation_loss(d_loc, d_cls, loc[n:], logits[n:])
            else:
                loc, logits = model(images, training=True)
                labelled = multibox_loss(loc_t, cls_t, loc, logits)
                distilled = {"loc": tf.constant(0.0), "cls": tf.constant(0.0)}
            total = (
                labelled["loc"] + labelled["cls"] + weight * (distilled["loc"] + distilled["cls"])
            )
            return {
                "loss": total,
                "loc": labelled["loc"],
                "cls": labelled["cls"],
                "distill": distilled["loc"] + distilled["cls"],
            }

        @tf.function
        def step(images: Any, loc_t: Any, cls_t: Any, *extra: Any) -> dict[str, Any]:
            with tf.GradientTape() as tape:
                values = losses(images, loc_t, cls_t, extra)
            variables = model.trainable_variables
            grads = tape.gradient(values["loss"], variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return values

        return step

    # -- the run -------------------------------------------------------------------------

    def validate(self) -> evaluation.EvalResult:
        """Dev-set COCO metrics of the current weights (``facemask eval``'s code)."""
        return evaluation.evaluate(self.dev_coco, self.dev.images, detector=self._detector)

    def run(
        self, *, on_step: ProgressHook | None = None, on_epoch: EpochHook | None = None
    ) -> list[EpochResult]:
        """Train the remaining epochs; the history of the whole run."""
        from facemask.model.train.loss import loss_summary

        tf = import_tensorflow()
        self.out.mkdir(parents=True, exist_ok=True)
        total_steps = self.recipe.epochs * self.steps_per_epoch
        done_steps = len(self.history) * self.steps_per_epoch
        batch = min(self.recipe.batch_size, len(self.data.images))
        for epoch in range(len(self.history), self.recipe.epochs):
            started = time.perf_counter()
            sums: dict[str, float] = {}
            count = 0
            batches: Any = self.labelled.dataset(epoch, self.recipe.batch_size)
            if self.distill is not None:
                batches = tf.data.Dataset.zip(
                    (batches, self.distill.dataset(epoch, self.steps_per_epoch))
                )
            for item in batches:
                if self.distill is not None:
                    (images, loc_t, cls_t), extra = item
                    values = self._step(images, loc_t, cls_t, *extra)
                else:
                    images, loc_t, cls_t = item
                    values = self._step(images, loc_t, cls_t)
                scalars = loss_summary(values)
                if not all(math.isfinite(v) for v in scalars.values()):
                    raise TrainError(
                        f"the loss is not finite at epoch {epoch + 1} ({scalars}); lower the "
                        "learning rate"
                    )
                for key, value in scalars.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                done_steps += 1
                if on_step is not None:
                    on_step(done_steps, total_steps, scalars)
            train_seconds = time.perf_counter() - started
            result = self.validate()
            self.epoch.assign(epoch + 1)
            epoch_result = EpochResult(
                epoch=epoch + 1,
                loss={key: value / max(count, 1) for key, value in sums.items()},
                dev={
                    "ap50": result.ap50,
                    "ap": result.ap,
                    "ap75": result.ap75,
                    "ap_small": result.ap_small,
                },
                seconds=round(time.perf_counter() - started, 3),
                train_seconds=round(train_seconds, 3),
                images=count * batch,
            )
            self.history.append(epoch_result)
            is_best = result.ap50 > self.best_ap50
            if is_best:
                self.best_epoch, self.best_ap50 = epoch + 1, result.ap50
                self.model.save_weights(str(self.out / BEST_WEIGHTS))
            self.manager.save(checkpoint_number=epoch + 1)
            write_json(self.out / RUN_FILE, self.state())
            logger.info(
                "epoch done",
                extra={
                    "epoch": epoch + 1,
                    "loss": round(epoch_result.loss["loss"], 4),
                    "dev_ap50": round(result.ap50, 4),
                    "best_epoch": self.best_epoch,
                    "seconds": epoch_result.seconds,
                },
            )
            if on_epoch is not None:
                on_epoch(epoch_result, is_best)
        return self.history

    def best_metrics(self) -> dict[str, Any]:
        """Dev metrics of the best epoch."""
        for result in self.history:
            if result.epoch == self.best_epoch:
                return {**result.dev, "epoch": result.epoch}
        raise TrainError("no epoch finished")

    def load_best(self) -> None:
        """Put the best epoch's weights into the model."""
        path = self.out / BEST_WEIGHTS
        if not path.is_file():
            raise TrainError(f"{path} does not exist: no epoch finished")
        self.model.load_weights(str(path))


def images_per_second(history: Sequence[EpochResult]) -> float:
    """Labelled training images per second of training time (validation excluded)."""
    images = sum(h.images for h in history)
    seconds = sum(h.train_seconds for h in history)
    return images / seconds if seconds > 0 else 0.0
