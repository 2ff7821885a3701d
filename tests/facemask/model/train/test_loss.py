"""The training losses: hard-negative mining picks 3 background anchors per face, the
hardest ones; perfect predictions cost (almost) nothing; distillation is zero when the
student equals the teacher."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.fixtures.paths import require_module

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tf() -> Any:
    require_module("tensorflow")
    from facemask.model.native import import_tensorflow

    return import_tensorflow()


def _ce(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sigmoid cross-entropy summed over the classes (numpy reference)."""
    p = 1.0 / (1.0 + np.exp(-logits))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(axis=-1)


def test_hard_negatives_are_the_three_hardest_per_positive(tf: Any) -> None:
    from facemask.model.train.loss import multibox_loss

    anchors = 40
    rng = np.random.default_rng(0)
    cls_target = np.zeros((2, anchors), np.int32)
    cls_target[0, [3, 7]] = [1, 2]  # two faces in image 0
    cls_target[0, 10] = -1  # ignored
    logits = rng.normal(0, 2, (2, anchors, 2)).astype(np.float32)
    loc_pred = rng.normal(0, 1, (2, anchors, 4)).astype(np.float32)
    loc_target = np.zeros((2, anchors, 4), np.float32)
    out = multibox_loss(loc_target, cls_target, loc_pred, logits, min_negatives=5)

    onehot = np.zeros((2, anchors, 2), np.float32)
    onehot[0, 3, 0] = onehot[0, 7, 1] = 1
    ce = _ce(logits.astype(np.float64), onehot)
    # image 0: its 2 faces + its 6 hardest background anchors (10 is ignored, not mined)
    background = [i for i in range(anchors) if i not in (3, 7, 10)]
    hardest0 = sorted(background, key=lambda i: -ce[0, i])[:6]
    # image 1: no face, min_negatives=5 hardest
    hardest1 = sorted(range(anchors), key=lambda i: -ce[1, i])[:5]
    expected_cls = (ce[0, [3, 7]].sum() + ce[0, hardest0].sum() + ce[1, hardest1].sum()) / 2
    assert float(out["cls"]) == pytest.approx(expected_cls, rel=1e-5)
    huber = np.where(np.abs(loc_pred) < 1, 0.5 * loc_pred**2, np.abs(loc_pred) - 0.5).sum(-1)
    assert float(out["loc"]) == pytest.approx(huber[0, [3, 7]].sum() / 2, rel=1e-5)
    assert float(out["positives"]) == 2


def test_perfect_predictions_cost_almost_nothing(tf: Any) -> None:
    from facemask.model.train.loss import multibox_loss

    cls_target = np.array([[0, 1, 2, 0, -1, 0, 0, 0]], np.int32)
    logits = np.full((1, 8, 2), -12.0, np.float32)
    logits[0, 1, 0] = logits[0, 2, 1] = 12.0
    loc = np.random.default_rng(1).normal(0, 1, (1, 8, 4)).astype(np.float32)
    out = multibox_loss(loc, cls_target, loc, logits)
    assert float(out["loc"]) == 0.0
    assert float(out["cls"]) < 1e-4
    wrong = multibox_loss(loc, cls_target, loc + 1.0, -logits)
    assert float(wrong["cls"]) > 10 and float(wrong["loc"]) > 1


def test_distillation_is_zero_when_the_student_is_the_teacher(tf: Any) -> None:
    from facemask.model.train.loss import distillation_loss

    rng = np.random.default_rng(2)
    logits = rng.normal(-3, 2, (2, 50, 2)).astype(np.float32)
    probs = 1.0 / (1.0 + np.exp(-logits))
    loc = rng.normal(0, 1, (2, 50, 4)).astype(np.float32)
    same = distillation_loss(loc, probs, loc, logits)
    assert abs(float(same["cls"])) < 1e-4 and float(same["loc"]) == 0.0
    moved = distillation_loss(loc, probs, loc + 0.5, logits + 1.0)
    assert float(moved["cls"]) > 0.01
    # the box term counts only where the teacher sees a face
    faces = (probs.max(axis=-1) > 0.5).sum()
    assert faces > 0
    assert float(moved["loc"]) == pytest.approx(4 * 0.125 * faces / faces, rel=1e-5)
