"""Training sets: what loads (the reviewed-alerts export's layout included) and the clear
error of every kind of bad set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facemask.model.train.data import DatasetError, DatasetSpec, load_dataset, load_frames

W, H = 64, 48
CATEGORIES = [{"id": 1, "name": "mask"}, {"id": 2, "name": "no_mask"}]


def _write_image(path: Path, width: int = W, height: int = H) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(path.suffix, rgb)
    assert ok
    path.write_bytes(data.tobytes())


def _coco() -> dict[str, Any]:
    """Two images, three faces; the second image's extra fields are the export's."""
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": W, "height": H},
            {
                "id": 2,
                "file_name": "b.png",
                "width": W,
                "height": H,
                "alert_id": "f" * 32,
                "camera_id": "lobby",
                "ts": 1.5,
                "review_state": "confirmed",
                "review_label": None,
            },
            {"id": 3, "file_name": "c.jpg", "width": W, "height": H},  # no face: a negative
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 4, 16, 20]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40, 10, 24, 38]},
            {
                "id": 3,
                "image_id": 2,
                "category_id": 2,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "score": 0.93,
                "source": "review",
            },
        ],
        "categories": CATEGORIES,
    }


def _write_set(tmp_path: Path, coco: dict[str, Any]) -> DatasetSpec:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for entry in coco.get("images", []):
        name = entry.get("file_name", "")
        if name and not (images / name).exists():
            _write_image(images / name)
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return DatasetSpec(tmp_path / "annotations.json", images)


def test_a_valid_set_loads_with_relative_boxes_and_class_ids(tmp_path: Path) -> None:
    loaded = load_dataset([_write_set(tmp_path, _coco())])
    assert [item.path.name for item in loaded.images] == ["a.jpg", "b.png", "c.jpg"]
    first = loaded.images[0]
    assert first.rgb.shape == (H, W, 3) and first.rgb.dtype == np.uint8
    np.testing.assert_allclose(
        first.boxes, [[8 / W, 4 / H, 24 / W, 24 / H], [40 / W, 10 / H, 1.0, 1.0]], rtol=1e-6
    )
    assert first.labels.tolist() == [0, 1]
    assert loaded.images[2].boxes.shape == (0, 4)
    assert loaded.faces == 3
    (source,) = loaded.sources
    assert source["name"] == tmp_path.name and source["images"] == 3 and source["faces"] == 3
    assert len(source["annotations_sha256"]) == 64


def test_sets_repeat_and_categories_match_by_name(tmp_path: Path) -> None:
    other = _coco()
    other["categories"] = [{"id": 7, "name": "no_mask"}, {"id": 9, "name": "mask"}]
    for annotation in other["annotations"]:
        annotation["category_id"] = {1: 9, 2: 7}[annotation["category_id"]]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    loaded = load_dataset(
        [_write_set(tmp_path / "one", _coco()), _write_set(tmp_path / "two", other)]
    )
    assert len(loaded.images) == 6
    assert [s["name"] for s in loaded.sources] == ["one", "two"]
    assert loaded.images[3].labels.tolist() == loaded.images[0].labels.tolist() == [0, 1]


def test_large_images_are_scaled_down_and_boxes_still_fit(tmp_path: Path) -> None:
    coco = _coco()
    loaded = load_dataset([_write_set(tmp_path, coco)], max_side=32)
    assert max(loaded.images[0].rgb.shape[:2]) == 32
    assert loaded.images[0].boxes.max() <= 1.0


def test_zero_area_boxes_are_skipped(tmp_path: Path) -> None:
    coco = _coco()
    coco["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4]})
    assert load_dataset([_write_set(tmp_path, coco)]).faces == 3


Edit = Callable[[dict[str, Any], Path], None]


def _drop_file(coco: dict[str, Any], images: Path) -> None:
    (images / "b.png").unlink()


def _wrong_size(coco: dict[str, Any], images: Path) -> None:
    _write_image(images / "a.jpg", W + 2, H)


def _corrupt(coco: dict[str, Any], images: Path) -> None:
    (images / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")


def _set(key: str, value: Any) -> Edit:
    def edit(coco: dict[str, Any], images: Path) -> None:
        coco[key] = value

    return edit


def _box(index: int, bbox: list[float]) -> Edit:
    def edit(coco: dict[str, Any], images: Path) -> None:
        coco["annotations"][index]["bbox"] = bbox

    return edit


def _annotation(**fields: Any) -> Edit:
    def edit(coco: dict[str, Any], images: Path) -> None:
        coco["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, **fields})

    return edit


BAD_SETS: list[tuple[str, Edit, str]] = [
    ("empty", _set("images", []), r"the set is empty \(no images\)"),
    ("no faces", _set("annotations", []), r"the set is empty \(no annotated faces\)"),
    ("missing image", _drop_file, r"1 of 3 images missing under .*images: b\.png"),
    ("wrong size", _wrong_size, r"images unusable: a\.jpg \(is 66x48, the annotations say 64x48"),
    ("corrupt image", _corrupt, r"images unusable: a\.jpg \(corrupt_image"),
    (
        "box right of the image",
        _box(0, [60, 4, 16, 20]),
        r"1 boxes outside the image: annotation 1 in a\.jpg \[60, 4, 16, 20\] \(64x48\)",
    ),
    ("box above the image", _box(1, [40, -3, 10, 10]), r"1 boxes outside the image"),
    ("negative size", _box(0, [8, 4, -5, 20]), r"negative or non-finite size: annotation 1"),
    ("malformed bbox", _box(0, [1, 2, 3]), r"malformed annotation"),
    (
        "unknown category id",
        _annotation(category_id=3, bbox=[1, 1, 5, 5]),
        r"1 annotations of unknown categories: annotation 99 \(category 3\)",
    ),
    (
        "unknown category name",
        _set("categories", [*CATEGORIES, {"id": 3, "name": "helmet"}]),
        r"unknown categories 3 'helmet'; the detector knows 'mask', 'no_mask'",
    ),
    (
        "unknown image",
        _annotation(image_id=42, bbox=[1, 1, 5, 5]),
        r"annotations of images the file does not list: annotation 99 \(image 42\)",
    ),
    ("not coco", _set("annotations", {"a": 1}), r"is not COCO"),
    ("image without size", _set("images", [{"id": 1, "file_name": "a.jpg"}]), "malformed image"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in BAD_SETS], ids=[c[0] for c in BAD_SETS]
)
def test_bad_sets_are_clear_errors(tmp_path: Path, edit: Edit, message: str) -> None:
    coco = _coco()
    spec = _write_set(tmp_path, coco)
    edit(coco, spec.images)
    spec.annotations.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=message) as raised:
        load_dataset([spec])
    assert str(spec.annotations) in str(raised.value) or "COCO" in str(raised.value)


def test_many_problems_are_counted_and_the_first_named(tmp_path: Path) -> None:
    coco = _coco()
    coco["annotations"] += [
        {"id": 10 + i, "image_id": 1, "category_id": 1, "bbox": [100 + i, 1, 5, 5]}
        for i in range(8)
    ]
    with pytest.raises(DatasetError, match=r"8 boxes outside the image: annotation 10 .* \.\.\.$"):
        load_dataset([_write_set(tmp_path, coco)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent.json", r"absent\.json does not exist"),
        (lambda p: (p / "bad.json").write_text("{") and p / "bad.json", r"cannot read"),
    ],
    ids=["absent", "not json"],
)
def test_unreadable_annotation_files(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=message):
        load_dataset([DatasetSpec(make(tmp_path), tmp_path / "images")])


def test_missing_image_directory_and_no_set(tmp_path: Path) -> None:
    spec = _write_set(tmp_path, _coco())
    with pytest.raises(DatasetError, match=r"image directory .*nowhere does not exist"):
        load_dataset([DatasetSpec(spec.annotations, tmp_path / "nowhere")])
    with pytest.raises(DatasetError, match="no training set given"):
        load_dataset([])


def test_unlabelled_frames_from_images_directories_and_videos(tmp_path: Path) -> None:
    _write_image(tmp_path / "one.jpg")
    (tmp_path / "dir").mkdir()
    _write_image(tmp_path / "dir" / "b.png")
    _write_image(tmp_path / "dir" / "a.jpg")
    (tmp_path / "dir" / "notes.txt").write_text("not an image")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for i in range(10):
        writer.write(np.full((H, W, 3), i * 20, np.uint8))
    writer.release()
    frames = load_frames([tmp_path / "one.jpg", tmp_path / "dir", video], per_video=4)
    assert len(frames) == 1 + 2 + 4
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    # frames spread over the clip: first and last included
    assert abs(int(frames[3].mean()) - 0) <= 3 and abs(int(frames[-1].mean()) - 180) <= 3
    with pytest.raises(DatasetError, match="does not exist"):
        load_frames([tmp_path / "gone.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no image"):
        load_frames([tmp_path / "empty"])
