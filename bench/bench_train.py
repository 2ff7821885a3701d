"""Training benchmark: the default recipe's cost on this machine and the accuracy it buys.

``python -m bench.bench_train`` (``make bench-train``; not part of ``make bench``: the full
recipe trains for tens of minutes) runs ``facemask train``'s default recipe (the ``make
train`` data: ``../shared/data/facemask-train``, best epoch chosen on ``facemask-dev``,
distillation on the sample video and images) into ``--out``, or, with ``--run DIR``,
reads a finished run instead of training again. It reports:

* **training**: wall time of the whole job (data loading, training, validation every
  epoch, export, no-forgetting), its training images/s (labelled images per second of
  training steps), seconds per epoch of training and of validation, the best epoch, and
  the machine's load average before and after (the CPUs may be shared: a load above the
  core count means the figures were measured under contention);
* **accuracy** on the dev set, scored by ``facemask eval``'s code (integer boxes): the
  upstream model and the trained one (its exported ``model.pb`` on the TensorFlow
  runtime), the trained int8 TFLite file, and both models with ``--tiles 2x2``; each row
  with its cost in model images/s (the runtime alone on a pre-processed batch of 32 dev
  images, the models timed in interleaved rounds, best round) and frames/s (five model
  runs per frame with tiles);
* **no forgetting**: the model card's share of the upstream model's faces the trained one
  still finds (IoU >= 0.5) on the held-out unlabelled frames and on the dev images.

``--quick`` is a smoke run: 8 training images, 6 dev images, 2 epochs, no tiles. Results:
tables on stdout and ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from facemask.core.preprocess import decode_image, preprocess_batch
from facemask.core.tiling import TileSpec
from facemask.model import evaluation
from facemask.model.detector import Detector, create_detector

DATA = common.SHARED_DIR / "data"
QUICK_TRAIN_IMAGES = 8
QUICK_DEV_IMAGES = 6
RATE_BATCH = 32
RATE_ROUNDS = 7


def _load_average() -> float:
    return os.getloadavg()[0]


def _subset(source: Path, out: Path, count: int) -> Path:
    from facemask.model.evaluation import coco_subset

    coco = json.loads((source / "annotations.json").read_text())
    out.write_text(json.dumps(coco_subset(coco, count)))
    return out


def train(out: Path, quick: bool, epochs: int | None) -> dict[str, Any]:
    """Run the default recipe (``--quick``: a smoke-sized one) into ``out``; the job's
    wall time and the load average around it."""
    from facemask.model.train.augment import NO_AUGMENT
    from facemask.model.train.data import DatasetSpec
    from facemask.model.train.job import TrainJob, run_job
    from facemask.model.train.loop import Recipe

    train_dir, dev_dir = DATA / "facemask-train", DATA / "facemask-dev"
    train_json, dev_json = train_dir / "annotations.json", dev_dir / "annotations.json"
    recipe = Recipe()
    if quick:
        out.mkdir(parents=True, exist_ok=True)
        train_json = _subset(train_dir, out.parent / "quick-train.json", QUICK_TRAIN_IMAGES)
        dev_json = _subset(dev_dir, out.parent / "quick-dev.json", QUICK_DEV_IMAGES)
        recipe = Recipe(epochs=2, batch_size=4, distill_batch=2, augment=NO_AUGMENT)
    if epochs is not None:
        recipe = Recipe(**{**recipe.__dict__, "epochs": epochs})
    job = TrainJob(
        train=[DatasetSpec(train_json, train_dir / "images")],
        dev=DatasetSpec(dev_json, dev_dir / "images"),
        out=out,
        recipe=recipe,
        unlabelled=[DATA / "video" / "group4_masks.mp4", DATA / "samples"],
        register=False,
    )
    load_before = _load_average()
    started = time.perf_counter()
    run_job(job)
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }


def model_rates(
    models: Sequence[tuple[str, Detector]], frames: Sequence[np.ndarray]
) -> dict[str, Any]:
    """Images/s of each model's runtime alone on a pre-processed batch of
    :data:`RATE_BATCH` dev images (its largest batch when smaller), in interleaved rounds
    so that load from elsewhere hits every model alike; best round counts."""
    configs: dict[str, tuple[Callable[[], object], int]] = {}
    for name, detector in models:
        picks = [frames[i % len(frames)] for i in range(RATE_BATCH)]
        batch = preprocess_batch(picks, detector.input_size)
        batch = batch[: detector.runtime.max_batch_size or RATE_BATCH]
        configs[name] = (functools.partial(detector.infer, batch), len(batch))
    return common.run_interleaved(configs, RATE_ROUNDS)


def accuracy(run: Path, dev_json: Path, dev_images: Path, *, tiles: bool) -> list[dict[str, Any]]:
    """The accuracy rows (see the module docstring)."""
    coco = evaluation.load_annotations(dev_json)
    items = evaluation.ground_truth_images(coco, dev_images)
    frames = [decode_image(item.path.read_bytes(), reduce="full").rgb for item in items]
    export = run / "export"
    models: list[tuple[str, Detector]] = [
        ("upstream", create_detector("tensorflow")),
        ("trained", create_detector("tensorflow", model_path=export / "model.pb")),
    ]
    int8 = export / "model.int8.tflite"
    if int8.is_file():
        models.append(("trained int8", create_detector("tflite", model_path=int8)))
    rates = model_rates(models, frames)
    rows = []
    for name, detector in models:
        runs: list[tuple[str, TileSpec | None]] = [("off", None)]
        if tiles and "int8" not in name:
            runs.append(("2x2", TileSpec.parse("2x2")))
        for tile_name, spec in runs:
            result = evaluation.evaluate(coco, dev_images, detector=detector, tiles=spec)
            model_runs = 1 if spec is None else 5
            rate = rates[name].best_rate
            rows.append(
                {
                    "model": name,
                    "tiles": tile_name,
                    "input_size": detector.input_size[0],
                    "ap50": result.ap50,
                    "ap": result.ap,
                    "ap75": result.ap75,
                    "ap_small": result.ap_small,
                    "model_images_per_s": rate,
                    "model_images_per_s_median": rates[name].median_rate,
                    "frames_per_s": rate / model_runs,
                }
            )
        detector.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (seconds, not minutes)")
    parser.add_argument("--run", type=Path, help="a finished training run to report (no training)")
    parser.add_argument(
        "--out", type=Path, help="run directory to train into (default: a temp dir)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--no-tiles", dest="tiles", action="store_false", help="skip --tiles 2x2")
    parser.add_argument("--output", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)

    threads = common.default_threads()
    payload: dict[str, Any] = {
        "benchmark": "train",
        "quick": args.quick,
        "machine": common.machine_info(threads),
    }
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        dev_json = DATA / "facemask-dev" / "annotations.json"
        if args.run is not None:
            run = args.run
            job_timing: dict[str, Any] = {}
        else:
            run = args.out or Path(tmp) / "run"
            job_timing = train(run, args.quick, args.epochs)
            if args.quick:
                dev_json = Path(run.parent / "quick-dev.json")
        state = json.loads((run / "run.json").read_text())
        card_path = run / "card.json"
        if not card_path.is_file():
            raise SystemExit(f"{card_path} does not exist: the run did not finish")
        card = json.loads(card_path.read_text())
        history = state["history"]
        training = {
            **job_timing,
            "wall_seconds_card": card["training"]["wall_seconds"],
            "epochs": len(history),
            "best_epoch": state["best"]["epoch"],
            "steps_per_epoch": state["steps_per_epoch"],
            "train_images_per_second": card["training"]["images_per_second"],
            "train_seconds_per_epoch": statistics.median(h["train_seconds"] for h in history),
            "validation_seconds_per_epoch": statistics.median(
                h["seconds"] - h["train_seconds"] for h in history
            ),
            "recipe": card["recipe"],
        }
        payload["training"] = training
        payload["curve"] = [{"epoch": h["epoch"], **h["dev"]} for h in history]
        payload["no_forgetting"] = card["metrics"]["no_forgetting"]
        payload["accuracy"] = accuracy(
            run, dev_json, DATA / "facemask-dev" / "images", tiles=args.tiles and not args.quick
        )

    print("training (default recipe)")
    common.print_table(
        ["wall s", "epochs", "best", "train img/s", "train s/epoch", "val s/epoch", "load"],
        [
            [
                training.get("wall_seconds", training["wall_seconds_card"]),
                training["epochs"],
                training["best_epoch"],
                training["train_images_per_second"],
                training["train_seconds_per_epoch"],
                training["validation_seconds_per_epoch"],
                training.get("load_average_after"),
            ]
        ],
    )
    print("\naccuracy on the dev set (facemask eval, integer boxes)")
    common.print_table(
        ["model", "tiles", "size", "AP50", "AP", "AP75", "AP_small", "model img/s", "frames/s"],
        [
            [
                r["model"],
                r["tiles"],
                r["input_size"],
                f"{r['ap50']:.3f}",
                f"{r['ap']:.3f}",
                f"{r['ap75']:.3f}",
                f"{r['ap_small']:.3f}",
                r["model_images_per_s"],
                r["frames_per_s"],
            ]
            for r in payload["accuracy"]
        ],
    )
    print("\nno forgetting: upstream faces (score > 0.5) the trained model still finds, IoU >= 0.5")
    common.print_table(
        ["frames", "n", "upstream faces", "found", "share", "same label"],
        [
            [
                name,
                m["frames"],
                m["upstream_faces"],
                m["found"],
                None if m["share"] is None else f"{m['share']:.3f}",
                None if m["same_class_share"] is None else f"{m['same_class_share']:.3f}",
            ]
            for name, m in payload["no_forgetting"].items()
        ],
    )
    path = common.write_results("train", payload, args.output)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
