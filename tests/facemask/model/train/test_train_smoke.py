"""CI smoke training: a few steps on a few real images, end to end - the loss is finite
and falls, the run can be interrupted and resumed, and the result is exported and
registered with its model card. ``facemask train``'s bad inputs are one clear error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from facemask.cli import main
from facemask.model.train.augment import NO_AUGMENT
from facemask.model.train.data import DatasetSpec
from facemask.model.train.loop import EpochResult, Recipe, TrainError
from tests.fixtures.paths import require, require_module

pytestmark = [pytest.mark.model, pytest.mark.slow]


def _subset(source: Path, out: Path, count: int) -> DatasetSpec:
    coco = json.loads((source / "annotations.json").read_text())
    images = coco["images"][:count]
    ids = {image["id"] for image in images}
    small = {
        "images": images,
        "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
        "categories": coco["categories"],
    }
    out.write_text(json.dumps(small))
    return DatasetSpec(out, source / "images")


class Interrupt(Exception):
    pass


def test_smoke_training_resumes_exports_and_registers(shared_dir: Path, tmp_path: Path) -> None:
    require_module("tensorflow")
    from facemask.model.registry import ModelRegistry
    from facemask.model.train.job import TrainJob, run_job

    data = require(shared_dir / "data")
    train = _subset(data / "facemask-train", tmp_path / "train.json", 8)
    dev = _subset(data / "facemask-dev", tmp_path / "dev.json", 6)
    recipe = Recipe(
        epochs=3, batch_size=4, warmup_epochs=0, distill_batch=2, augment=NO_AUGMENT, seed=3
    )
    job = TrainJob(
        train=[train],
        dev=dev,
        out=tmp_path / "run",
        recipe=recipe,
        unlabelled=[data / "samples"],
        registry_root=tmp_path / "store",
    )
    steps: list[dict[str, float]] = []

    def stop_after_first(result: EpochResult, best: bool) -> None:
        if result.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_job(
            job, on_step=lambda done, total, losses: steps.append(losses), on_epoch=stop_after_first
        )
    assert len(steps) == 2
    with pytest.raises(TrainError, match="already holds a training run"):
        run_job(job)
    result = run_job(replace(job, resume=True), on_step=lambda d, t, losses: steps.append(losses))

    assert [h.epoch for h in result.history] == [1, 2, 3]
    assert len(steps) == 6
    assert all(all(map(lambda v: v == v and abs(v) < 1e6, s.values())) for s in steps)
    # the same two images every epoch (no augmentation): the loss falls
    assert result.history[-1].loss["loss"] < result.history[0].loss["loss"]
    assert steps[0]["distill"] >= 0

    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["epochs_done"] == 3 and run["best"]["epoch"] in (1, 2, 3)
    assert (tmp_path / "run" / "best.weights.h5").is_file()
    assert (tmp_path / "run" / "checkpoints").is_dir()

    version = ModelRegistry(tmp_path / "store").get(result.version or "")
    for variant in ("tf", "float32", "int8"):
        assert version.file(variant).is_file()
    card: dict[str, Any] = version.card
    assert card["parent"] == "upstream" and card["input_size"] == 260
    assert (
        card["datasets"][0]["images"] == 8 and len(card["datasets"][0]["annotations_sha256"]) == 64
    )
    assert card["recipe"]["epochs"] == 3 and card["recipe"]["seed"] == 3
    dev_metrics = card["metrics"]["dev"]
    assert dev_metrics["epoch"] == run["best"]["epoch"]
    assert 0.0 <= dev_metrics["ap50"] <= 1.0 and "ap_small" in dev_metrics
    # every exported file scored on the dev set (what auto reads to choose for the version)
    scored = card["metrics"]["variants"]
    assert set(scored) == {"tensorflow-float32", "tflite-float32", "tflite-int8"}
    assert scored["tensorflow-float32"] == round(dev_metrics["ap50"], 4)
    assert abs(scored["tflite-float32"] - scored["tensorflow-float32"]) < 0.01
    assert all(0.0 <= v <= 1.0 for v in scored.values())
    forgetting = card["metrics"]["no_forgetting"]
    assert forgetting["held_out_frames"]["frames"] == 1  # every other sample image
    assert forgetting["dev_images"]["frames"] == 6
    share = forgetting["dev_images"]["share"]
    assert share is None or 0.0 <= share <= 1.0
    assert card["training"]["epochs"] == 3 and card["training"]["images_per_second"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "x"], "give one --images per --data"),
        (["--data", "missing.json"], "missing.json does not exist"),
    ],
    ids=["unpaired", "missing"],
)
def test_cli_bad_inputs_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = ["train", "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path)]
    base += ["--dev-data", str(tmp_path / "dev.json"), "--dev-images", str(tmp_path)]
    base += ["--out", str(tmp_path / "out"), "--no-progress"]
    if args[0] == "--data":
        base[2] = str(tmp_path / args[1])
    else:
        base += args
    assert main(base) == 1
    err = capsys.readouterr().err
    assert err.startswith("facemask train: error: ") and message in err


def test_a_too_small_input_size_is_refused_before_any_data_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path)]
    args += ["--dev-data", str(tmp_path / "dev.json"), "--dev-images", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--input-size", "100"])
    assert exit_info.value.code == 2
    assert "--input-size: input side 100 is too small" in capsys.readouterr().err
