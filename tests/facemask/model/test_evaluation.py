"""``facemask eval``: COCO conversion, pycocotools scoring, errors, and the AP acceptance test
on the dev set against the reference's own figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facemask.cli import main
from facemask.core.types import Detections
from facemask.model import evaluation

DEV_ANNOTATIONS = Path("data") / "facemask-dev" / "annotations.json"
DEV_IMAGES = Path("data") / "facemask-dev" / "images"
JSON_KEYS = {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "per_class"}
JSON_KEYS |= {"images", "seconds"}


def _coco(images: list[tuple[int, str, int, int]], boxes: list[tuple[int, int, list[float]]]):
    return {
        "images": [
            {"id": i, "file_name": name, "width": w, "height": h} for i, name, w, h in images
        ],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
            }
            for n, (image_id, cat, bbox) in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "mask"}, {"id": 2, "name": "no_mask"}],
    }


# -- COCO conversion ----------------------------------------------------------------------------


def test_category_mapping() -> None:
    assert evaluation.category_id(0) == 1  # mask
    assert evaluation.category_id(1) == 2  # no_mask
    with pytest.raises(ValueError, match="class_id 2"):
        evaluation.category_id(2)


def _det(class_id: int, score: float, box: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array([box]), np.array([score]), np.array([class_id]))


def test_integer_box_is_the_printed_box_as_xywh() -> None:
    # 200x100 image: x1 = int(20.98) = 20, y1 = int(-3.0) -> 0 (clipped), x2 = int(101.8) = 101,
    # y2 = int(105.0) -> 100 (clipped)
    det = _det(0, 0.9, (0.1049, -0.03, 0.509, 1.05))
    assert det.pixels(200, 100).tolist() == [[20, 0, 101, 100]]
    assert evaluation.coco_boxes(det, 200, 100).tolist() == [[20.0, 0.0, 81.0, 100.0]]


def test_unrounded_box_keeps_fractions_and_clips_to_the_image() -> None:
    det = _det(1, 0.5, (0.1049, -0.03, 0.509, 1.05))
    ((x, y, w, h),) = evaluation.coco_boxes(det, 200, 100, unrounded=True).tolist()
    assert x == pytest.approx(20.98)
    assert y == 0.0
    assert w == pytest.approx(101.8 - 20.98)
    assert h == 100.0
    # a box entirely outside the image collapses to zero size instead of going negative
    outside = _det(0, 0.5, (1.1, 0.2, 1.3, 0.4))
    assert evaluation.coco_boxes(outside, 200, 100, unrounded=True).tolist() == [
        [200.0, 20.0, 0.0, 20.0]
    ]


def test_to_coco_results() -> None:
    dets = Detections.concat(
        [_det(0, 0.75, (0.1, 0.2, 0.3, 0.4)), _det(1, 0.25, (0.5, 0.5, 0.9, 0.9))]
    )
    results = evaluation.to_coco_results(7, dets, 100, 50)
    assert results == [
        {"image_id": 7, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 10.0], "score": 0.75},
        {"image_id": 7, "category_id": 2, "bbox": [50.0, 25.0, 40.0, 20.0], "score": 0.25},
    ]


# -- scoring ------------------------------------------------------------------------------------


def test_coco_metrics_uses_pycocotools_and_keeps_stdout_clean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    coco = _coco(
        [(1, "a.jpg", 200, 200), (2, "b.jpg", 200, 200)],
        [(1, 1, [10, 10, 50, 50]), (1, 2, [100, 100, 60, 60]), (2, 1, [20, 30, 100, 80])],
    )
    perfect = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [100, 100, 60, 60], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [20, 30, 100, 80], "score": 0.7},
    ]
    stats, per_class = evaluation.coco_metrics(coco, perfect)
    assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert stats[1] == pytest.approx(1.0)  # AP50
    assert set(per_class) == {"mask", "no_mask"}
    for values in per_class.values():
        assert values == {"AP50": pytest.approx(1.0), "AP": pytest.approx(1.0)}
    assert capsys.readouterr().out == ""

    # the no_mask box detected as mask (with the lowest score): no_mask AP 0, and the mask
    # false positive ranks after every true mask, so mask AP50 stays perfect
    wrong = [dict(r) for r in perfect]
    wrong[1]["category_id"] = 1
    wrong[1]["score"] = 0.1
    stats, per_class = evaluation.coco_metrics(coco, wrong)
    assert per_class["no_mask"]["AP50"] == 0.0
    assert per_class["mask"]["AP50"] == pytest.approx(1.0)
    assert stats[1] == pytest.approx(0.5)

    # a box shifted to IoU ~0.67: counted at IoU .5, not at .75
    shifted = [dict(r) for r in perfect]
    shifted[0]["bbox"] = [20, 10, 50, 50]  # IoU = 40*50 / (2*2500 - 2000) = 0.667
    stats, per_class = evaluation.coco_metrics(coco, shifted)
    assert per_class["mask"]["AP50"] == pytest.approx(1.0)
    assert stats[2] < 1.0  # AP75
    assert capsys.readouterr().out == ""


def test_no_detections_scores_zero() -> None:
    coco = _coco([(1, "a.jpg", 100, 100)], [(1, 1, [10, 10, 20, 20])])
    stats, per_class = evaluation.coco_metrics(coco, [])
    assert stats[:6] == [0.0] * 6
    assert per_class["mask"]["AP50"] == 0.0


# -- input errors -------------------------------------------------------------------------------


def test_unreadable_annotation_files(tmp_path: Path) -> None:
    with pytest.raises(evaluation.EvaluationError, match="cannot read annotation file"):
        evaluation.load_annotations(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(evaluation.EvaluationError, match="not valid JSON"):
        evaluation.load_annotations(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(evaluation.EvaluationError, match="is not COCO"):
        evaluation.load_annotations(bad)
    bad.write_text(json.dumps(_coco([(1, "a.jpg", 10, 10)], []) | {"annotations": [{"id": 1}]}))
    with pytest.raises(evaluation.EvaluationError, match="malformed annotation"):
        evaluation.load_annotations(bad)


def test_missing_images_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"\xff\xd8")
    coco = _coco([(1, "a.jpg", 10, 10), (2, "gone.jpg", 10, 10)], [(1, 1, [1, 1, 5, 5])])
    with pytest.raises(evaluation.EvaluationError, match=r"1 of 2 images .* missing.*gone\.jpg"):
        evaluation.ground_truth_images(coco, tmp_path / "img")
    with pytest.raises(evaluation.EvaluationError, match="does not exist"):
        evaluation.ground_truth_images(coco, tmp_path / "nowhere")


def test_cli_errors_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps(_coco([(1, "gone.jpg", 10, 10)], [(1, 1, [1, 1, 5, 5])])))
    rc = main(["eval", "--annotations", str(annotations), "--images", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""
    assert "facemask eval: error:" in captured.err
    assert "gone.jpg" in captured.err
    rc = main(["eval", "--annotations", str(tmp_path / "x.json"), "--images", str(tmp_path)])
    assert rc == 1
    assert "cannot read annotation file" in capsys.readouterr().err


def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, facemask.model.evaluation, facemask.cli.evaluate; "
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- with the model -----------------------------------------------------------------------------


@pytest.fixture()
def cached_detector(detector: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's detector in the command's cache, so the CLI does not load a second one."""
    monkeypatch.setitem(evaluation._DETECTORS, ("tensorflow", ()), detector)
    return detector


@pytest.mark.model
def test_cli_json_and_table_on_a_subset(
    cached_detector: Any, shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = json.loads((shared_dir / DEV_ANNOTATIONS).read_text())
    keep = {1, 2, 3}
    subset = {
        **full,
        "images": [im for im in full["images"] if im["id"] in keep],
        "annotations": [a for a in full["annotations"] if a["image_id"] in keep],
    }
    annotations = tmp_path / "subset.json"
    annotations.write_text(json.dumps(subset))
    argv = ["eval", "--annotations", str(annotations), "--images", str(shared_dir / DEV_IMAGES)]

    assert main([*argv, "--json", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    report = json.loads(out)
    assert set(report) == JSON_KEYS
    assert report["images"] == 3
    assert set(report["per_class"]) == {"mask", "no_mask"}
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= report[key] <= 1.0
    assert report["AP50"] >= report["AP"] >= report["AP75"]
    assert report["seconds"] > 0

    assert main([*argv, "--json", "--unrounded", "--decode", "auto"]) == 0
    unrounded = json.loads(capsys.readouterr().out)
    assert set(unrounded) == JSON_KEYS

    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "AP50" in table and "AP50 no_mask" in table
    assert f"{report['AP50']:.3f}" in table


@pytest.fixture(scope="module")
def dev_detections(
    detector: Any, shared_dir: Path
) -> tuple[dict[str, Any], list[evaluation.ImageDetections]]:
    """One detector run over the whole dev set (conf 0.01, IoU 0.4, full decode)."""
    coco = evaluation.load_annotations(shared_dir / DEV_ANNOTATIONS)
    return coco, evaluation.detect_images(coco, shared_dir / DEV_IMAGES, detector)


@pytest.fixture(scope="module")
def dev_result(
    dev_detections: tuple[dict[str, Any], list[evaluation.ImageDetections]],
) -> evaluation.EvalResult:
    """The default scoring (integer boxes) of the dev-set run."""
    coco, per_image = dev_detections
    return evaluation.score(coco, per_image)


@pytest.mark.model
@pytest.mark.slow
def test_dev_set_ap_matches_the_reference(
    dev_result: evaluation.EvalResult, reference_dir: Path
) -> None:
    reference = json.loads((reference_dir / "aizoo_dev_metrics.json").read_text())
    result = dev_result
    assert result.images == 150
    # the acceptance figures
    assert result.ap50 == pytest.approx(0.420, abs=0.005)
    assert result.ap == pytest.approx(0.129, abs=0.005)
    # and the reference's own, metric by metric
    stats = reference["stats"]
    assert result.ap == pytest.approx(stats["AP@[.5:.95]"], abs=0.005)
    assert result.ap50 == pytest.approx(stats["AP@.5"], abs=0.005)
    assert result.ap75 == pytest.approx(stats["AP@.75"], abs=0.005)
    assert result.ap_small == pytest.approx(stats["AP_small"], abs=0.005)
    assert result.ap_medium == pytest.approx(stats["AP_medium"], abs=0.005)
    assert result.ap_large == pytest.approx(stats["AP_large"], abs=0.005)
    for name in ("mask", "no_mask"):
        assert result.per_class[name]["AP50"] == pytest.approx(
            reference["per_class"][name]["AP@.5"], abs=0.005
        )
    assert result.detections == pytest.approx(reference["n_detections"], rel=0.001)


@pytest.mark.model
@pytest.mark.slow
def test_dev_set_unrounded_boxes_score_higher(
    dev_detections: tuple[dict[str, Any], list[evaluation.ImageDetections]],
    dev_result: evaluation.EvalResult,
) -> None:
    coco, per_image = dev_detections
    rounded = dev_result
    unrounded = evaluation.score(coco, per_image, unrounded=True)
    assert unrounded.detections == rounded.detections
    # truncation shrinks every box a little: scoring the float boxes gains ~2.5 AP50 points
    assert unrounded.ap50 == pytest.approx(0.445, abs=0.01)
    assert unrounded.ap50 > rounded.ap50 + 0.01


@pytest.mark.parametrize(
    ("count", "images", "annotations"),
    [(0, [], []), (1, [7], [70, 71]), (2, [7, 3], [70, 71, 30]), (5, [7, 3, 9], [70, 71, 30])],
)
def test_coco_subset_keeps_the_first_images_and_theirs_only(
    count: int, images: list[int], annotations: list[int]
) -> None:
    coco = {
        "info": {"year": 2026},
        "images": [{"id": 7}, {"id": 3}, {"id": 9}],
        "annotations": [
            {"id": 70, "image_id": 7},
            {"id": 30, "image_id": 3},
            {"id": 71, "image_id": 7},
        ],
        "categories": [{"id": 1, "name": "mask"}],
    }
    out = evaluation.coco_subset(coco, count)
    assert [im["id"] for im in out["images"]] == images
    assert sorted(a["id"] for a in out["annotations"]) == sorted(annotations)
    assert out["categories"] == coco["categories"] and out["info"] == coco["info"]
    assert len(coco["images"]) == 3  # the set itself is untouched
