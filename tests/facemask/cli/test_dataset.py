"""``facemask dataset export``: which faces of a reviewed alert go into the training set, with
which label (the export against a running service: tests/services/alerts/test_export.py)."""

from __future__ import annotations

from typing import Any

import pytest

from facemask.cli import build_parser
from facemask.cli.dataset import ExportError, labelled_faces

VIOLATOR = [40, 40, 110, 120]
MASKED = [180, 50, 250, 130]
FAINT = [320, 60, 390, 140]


def alert(state: str, label: str | None, **changes: Any) -> dict[str, Any]:
    doc = {
        "id": "a" * 32,
        "width": 464,
        "height": 330,
        "box": VIOLATOR,
        "score": 0.93,
        "rule": {"min_score": 0.6},
        "detections": [
            {"label": "no_mask", "score": 0.93, "box": VIOLATOR},
            {"label": "mask", "score": 0.88, "box": MASKED},
            {"label": "no_mask", "score": 0.3, "box": FAINT},
        ],
        "review": {"state": state, "label": label},
    }
    doc.update(changes)
    return doc


def faces(doc: dict[str, Any]) -> list[tuple[str, list[int], bool]]:
    got = labelled_faces(doc)
    boxes = got.detections.pixels(doc["width"], doc["height"]).tolist()
    return list(zip(got.detections.labels, boxes, got.reviewed.tolist(), strict=True))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            alert("confirmed", "no_mask"),
            [("no_mask", VIOLATOR, True), ("mask", MASKED, False)],
        ),
        (
            alert("false_positive", "mask"),
            [("mask", VIOLATOR, True), ("mask", MASKED, False)],
        ),
        (alert("false_positive", "none"), [("mask", MASKED, False)]),
        # an older review without a label: the state's default
        (
            alert("false_positive", None),
            [("mask", VIOLATOR, True), ("mask", MASKED, False)],
        ),
        # no rule stored (a hand-made alert): every face counts
        (
            alert("confirmed", "no_mask", rule={}),
            [("no_mask", VIOLATOR, True), ("mask", MASKED, False), ("no_mask", FAINT, False)],
        ),
        # the violator's box is not among the faces: it is added with its reviewed label
        (
            alert("false_positive", "mask", box=[10, 200, 60, 260]),
            [
                ("no_mask", VIOLATOR, False),
                ("mask", MASKED, False),
                ("mask", [10, 200, 60, 260], True),
            ],
        ),
        # the violator below min_score (a stricter rule now): still exported, it was judged
        (
            alert("confirmed", "no_mask", rule={"min_score": 0.95}),
            [("no_mask", VIOLATOR, True)],
        ),
    ],
    ids=["confirmed", "fp-mask", "fp-none", "fp-default", "no-rule", "box-added", "strict"],
)
def test_labelled_faces(doc: dict[str, Any], expected: list[tuple[str, list[int], bool]]) -> None:
    assert faces(doc) == expected


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (alert("acknowledged", None), ValueError),
        (alert("new", None), ValueError),
        (alert("confirmed", "no_mask", detections=[{"label": "hat"}]), ExportError),
    ],
)
def test_unreviewed_or_unreadable_alerts_are_refused(
    doc: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        labelled_faces(doc)


def test_the_command_is_registered_and_says_what_it_leaves_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["dataset", "export", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "New and acknowledged alerts are not exported" in text
    assert "--reviewed" in text and "FACEMASK_ALERTS_API_TOKEN" in text
