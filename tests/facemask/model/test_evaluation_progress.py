"""``facemask eval`` progress: it counts images whose detections are done (never images only
handed to the model), one model batch at a time, tiled or not; a bar on stderr with
``--progress``, none by default off a terminal, and a summary line either way."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facemask.cli import main
from facemask.core.tiling import TileSpec
from facemask.core.types import Detections
from facemask.model import evaluation

pytestmark = pytest.mark.model

DEV_ANNOTATIONS = Path("data") / "facemask-dev" / "annotations.json"
DEV_IMAGES = Path("data") / "facemask-dev" / "images"
IMAGES = 6


class CountingDetector:
    """The real detector, counting the images of each ``detect`` call once it returned."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.calls: list[int] = []

    @property
    def finished(self) -> int:
        return sum(self.calls)

    def detect(self, images: Sequence[np.ndarray], **options: Any) -> list[Detections]:
        out = self.detector.detect(images, **options)
        self.calls.append(len(images))
        return out


@pytest.fixture(scope="module")
def subset(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first dev-set images' annotation file."""
    full = json.loads((shared_dir / DEV_ANNOTATIONS).read_text())
    keep = {image["id"] for image in full["images"][:IMAGES]}
    subset = {
        **full,
        "images": [im for im in full["images"] if im["id"] in keep],
        "annotations": [a for a in full["annotations"] if a["image_id"] in keep],
    }
    path = tmp_path_factory.mktemp("eval") / "subset.json"
    path.write_text(json.dumps(subset))
    return path


@pytest.mark.parametrize(
    ("tiles", "batch_size", "calls"),
    [
        (None, 4, [4, 2]),  # a batch is batch_size images
        ("2x2", 10, [2, 2, 2]),  # 5 windows an image: 2 images fill a batch of 10
        ("2x2", 3, [1] * IMAGES),  # more windows than a batch: one image at a time
    ],
)
def test_progress_counts_images_whose_detections_are_done(
    detector: Any,
    shared_dir: Path,
    subset: Path,
    tiles: str | None,
    batch_size: int,
    calls: list[int],
) -> None:
    counting = CountingDetector(detector)
    spec = TileSpec.parse(tiles) if tiles else None
    seen: list[tuple[int, int]] = []

    def on_progress(done: int, total: int) -> None:
        assert done == counting.finished  # finished, not merely submitted
        seen.append((done, total))

    coco = evaluation.load_annotations(subset)
    per_image = evaluation.detect_images(
        coco,
        shared_dir / DEV_IMAGES,
        counting,  # type: ignore[arg-type]
        batch_size=batch_size,
        tiles=spec,
        progress=on_progress,
    )
    assert counting.calls == calls
    done = np.cumsum(calls).tolist()
    assert seen == [(n, IMAGES) for n in done]
    # batching for progress does not change what is found: one call over all images
    whole = detector.detect(
        [
            evaluation._decoded(item, "full").rgb
            for item in evaluation.ground_truth_images(coco, shared_dir / DEV_IMAGES)
        ],
        conf=evaluation.DEFAULT_CONF,
        iou=evaluation.DEFAULT_IOU,
        batch_size=batch_size,
        tiles=spec,
    )
    assert len(per_image) == len(whole) == IMAGES
    for got, want in zip(per_image, whole, strict=True):
        assert len(got.detections) == len(want)
        np.testing.assert_allclose(got.detections.xyxy, want.xyxy, atol=1e-4)
        np.testing.assert_allclose(got.detections.scores, want.scores, atol=1e-4)


@pytest.fixture()
def cached_detector(detector: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's detector in the command's cache, so the CLI does not load a second one."""
    monkeypatch.setitem(evaluation._DETECTORS, ("tensorflow", ()), detector)
    return detector


def test_cli_bar_with_progress_none_by_default_and_a_summary(
    cached_detector: Any, shared_dir: Path, subset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--annotations", str(subset), "--images", str(shared_dir / DEV_IMAGES)]
    argv += ["--json", "--batch-size", "4"]
    summary = re.compile(
        rf"INFO facemask\.cli\.evaluate: {IMAGES} images in \d+\.\d s \(\d+\.\d images/s\) "
        r"detections=\d+ AP50=[01]\.\d+"
    )

    assert main([*argv, "--progress"]) == 0
    out, err = capsys.readouterr()
    assert set(json.loads(out)) >= {"AP50", "images"}  # stdout: the result only
    counts = [int(n) for n in re.findall(rf"\| *(\d+)/{IMAGES} \[", err)]
    assert counts[0] == 0 and counts[-1] == IMAGES and counts == sorted(counts)
    assert "eval (scoring): 100%" in err
    assert summary.search(err), err

    assert main(argv) == 0  # stderr is no terminal here: no bar, the summary still
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == IMAGES
    assert f"/{IMAGES} [" not in err and "%|" not in err
    assert summary.search(err), err
