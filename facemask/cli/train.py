"""``facemask train``: fine-tune the detector on labelled sets and register the result.

``--data COCO.json --images DIR`` (repeatable, paired in order) name the training sets:
``../shared/data/facemask-train``, the export of reviewed alerts (``facemask dataset
export --reviewed --out DIR``, then ``--data DIR/annotations.json --images DIR/images``),
any COCO set with the categories ``mask`` / ``no_mask``. ``--dev-data`` / ``--dev-images``
is the set the best epoch is chosen on (every epoch is scored on it with ``facemask
eval``'s code); never a training set. ``--unlabelled`` (repeatable: a video, an image or
a directory of images; your own cameras' footage is best) feeds the distillation term
that keeps the upstream model's behaviour on such frames; half of them are held out for
the no-forgetting measure on the model card.

The run lives in ``--out`` (checkpoints, ``run.json``, the exported files under
``export/``); ``--resume`` continues an interrupted run. At the end the best epoch is
exported (TensorFlow, TFLite float32 and int8) and added to the local model store with
its model card; stdout gets one JSON object: the version and its card. On a terminal a
progress bar on stderr shows the training steps with the loss and the ETA, and each
epoch's dev AP50. TensorFlow is imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from facemask.cli.progress import add_progress_argument, progress, progress_enabled
from facemask.cli.runtime_args import positive_int
from facemask.core.anchors import feature_map_sizes_for

logger = logging.getLogger(__name__)

HELP = "fine-tune the detector on COCO sets and register the new model version"


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _input_size(text: str) -> int:
    """A model input side the network takes (checked here, before any data is loaded)."""
    side = positive_int(text)
    try:
        feature_map_sizes_for(side)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return side


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options."""
    from facemask.model.train.loop import Recipe

    recipe = Recipe()
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="COCO.json",
        help="COCO annotation file of a training set (repeat for several sets)",
    )
    parser.add_argument(
        "--images",
        action="append",
        required=True,
        metavar="DIR",
        help="image directory of the training set given by the --data at the same position",
    )
    parser.add_argument(
        "--dev-data", required=True, metavar="COCO.json", help="COCO file of the dev set"
    )
    parser.add_argument("--dev-images", required=True, metavar="DIR", help="dev set images")
    parser.add_argument(
        "--unlabelled",
        action="append",
        default=[],
        metavar="PATH",
        help="unlabelled frames for distillation from the upstream model: a video, an image "
        "or a directory of images (repeatable; default: none, with a warning)",
    )
    parser.add_argument(
        "--from",
        dest="parent",
        default="upstream",
        metavar="upstream|VERSION",
        help="model to start from: upstream or a version of the model store (default %(default)s)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="run directory (checkpoints, run.json, export)"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=recipe.epochs, help="epochs (default %(default)s)"
    )
    parser.add_argument(
        "--input-size",
        type=_input_size,
        default=recipe.input_size,
        help="model input width = height in pixels (default %(default)s, the upstream size)",
    )
    parser.add_argument("--seed", type=int, default=recipe.seed, help="seed (default %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=recipe.batch_size,
        help="labelled images per step (default %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=_non_negative_float,
        default=recipe.learning_rate,
        help="peak learning rate of Adam (warm-up, then cosine decay; default %(default)s)",
    )
    parser.add_argument(
        "--distill-weight",
        type=_non_negative_float,
        default=recipe.distill_weight,
        help="weight of the distillation term (0: off; default %(default)s)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out with the same options"
    )
    parser.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="export into OUT/export only, do not add the version to the model store",
    )
    add_progress_argument(parser, "training steps")


def _job(args: argparse.Namespace) -> Any:
    from facemask.model.train.data import DatasetError, DatasetSpec
    from facemask.model.train.job import TrainJob
    from facemask.model.train.loop import Recipe

    if len(args.data) != len(args.images):
        raise DatasetError(
            f"give one --images per --data ({len(args.data)} --data, {len(args.images)} --images)"
        )
    recipe = Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        input_size=args.input_size,
        seed=args.seed,
        distill_weight=args.distill_weight,
    )
    return TrainJob(
        train=[DatasetSpec(Path(a), Path(i)) for a, i in zip(args.data, args.images, strict=True)],
        dev=DatasetSpec(Path(args.dev_data), Path(args.dev_images)),
        out=args.out,
        recipe=recipe,
        parent=args.parent,
        unlabelled=[Path(p) for p in args.unlabelled],
        resume=args.resume,
        register=args.register,
    )


def run(args: argparse.Namespace) -> int:
    """Train; one clear error line on stderr and exit 1 on bad inputs."""
    from facemask.model.registry import RegistryError
    from facemask.model.ssd import WeightsError
    from facemask.model.store import ModelStoreError
    from facemask.model.train.data import DatasetError
    from facemask.model.train.job import run_job
    from facemask.model.train.loop import EpochResult, TrainError

    try:
        job = _job(args)
        with progress(
            None, unit="step", desc="train", enabled=progress_enabled(args.progress)
        ) as bar:

            def on_step(done: int, total: int, losses: dict[str, float]) -> None:
                bar.update(done, total)
                bar.stage(f"train loss {losses['loss']:.3f}")

            def on_epoch(result: EpochResult, best: bool) -> None:
                mark = " (best)" if best else ""
                bar.write(
                    f"epoch {result.epoch}/{job.recipe.epochs}: loss {result.loss['loss']:.3f}, "
                    f"dev AP50 {result.dev['ap50']:.3f}{mark}, {result.seconds:.0f} s"
                )

            result = run_job(job, on_step=on_step, on_epoch=on_epoch)
        logger.info(bar.summary(version=result.version or "", path=str(result.path)))
    except (DatasetError, TrainError, RegistryError, WeightsError, ModelStoreError) as exc:
        sys.stderr.write(f"facemask train: error: {exc}\n")
        return 1
    sys.stdout.write(
        json.dumps({"version": result.version, "path": str(result.path), "card": result.card})
        + "\n"
    )
    sys.stdout.flush()
    return 0
