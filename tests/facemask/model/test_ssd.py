"""The Keras SSD: equal to the upstream frozen graph, at any input size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facemask.core.anchors import NUM_ANCHORS, generate_anchors
from facemask.core.preprocess import decode_image, preprocess_batch
from facemask.model import store as modelstore
from facemask.model.runtime.base import Runtime
from tests.fixtures.paths import missing, require, require_module

pytestmark = pytest.mark.model
DEV_SUBSET = 24  # dev images checked (every 6th of the 150)


@pytest.fixture(scope="module")
def ssd() -> Any:
    require_module("tensorflow")
    from facemask.model.ssd import build_ssd

    try:
        return build_ssd()
    except modelstore.ModelStoreError as exc:
        missing(str(exc))


@pytest.fixture(scope="module")
def frozen_graph() -> Iterator[Runtime]:
    """The upstream frozen graph as it is, batch norms not folded (TensorFlow runtime)."""
    require_module("tensorflow")
    from facemask.model.runtime.tensorflow import TensorFlowRuntime

    runtime = TensorFlowRuntime(fold_batch_norm=False)
    yield runtime
    runtime.close()


def _images(samples_dir: Path, shared_dir: Path) -> list[np.ndarray]:
    dev = require(shared_dir / "data" / "facemask-dev" / "images", "dev set")
    files = sorted(samples_dir.iterdir()) + sorted(dev.glob("*.jpg"))[::6][:DEV_SUBSET]
    return [decode_image(path.read_bytes()).rgb for path in files]


@pytest.mark.slow
def test_keras_model_equals_frozen_graph(
    ssd: Any, frozen_graph: Runtime, samples_dir: Path, shared_dir: Path
) -> None:
    images = _images(samples_dir, shared_dir)
    assert len(images) == 3 + DEV_SUBSET
    for start in range(0, len(images), 9):
        batch = preprocess_batch(images[start : start + 9])
        want_loc, want_cls = frozen_graph.infer(batch)
        loc, cls = (np.asarray(t) for t in ssd(batch, training=False))
        assert loc.shape == want_loc.shape == (len(batch), NUM_ANCHORS, 4)
        assert cls.shape == want_cls.shape == (len(batch), NUM_ANCHORS, 2)
        np.testing.assert_allclose(loc, want_loc, rtol=0, atol=1e-4)
        np.testing.assert_allclose(cls, want_cls, rtol=0, atol=1e-4)
        assert cls.max() > 0.5  # faces are found, not only the background


def test_logits_are_the_scores_before_the_sigmoid(ssd: Any, samples_dir: Path) -> None:
    from facemask.model.ssd import build_ssd

    raw = build_ssd(logits=True)
    batch = preprocess_batch(
        [decode_image(p.read_bytes()).rgb for p in sorted(samples_dir.iterdir())]
    )
    loc, cls = (np.asarray(t) for t in ssd(batch))
    loc_raw, logits = (np.asarray(t) for t in raw(batch))
    np.testing.assert_array_equal(loc_raw, loc)
    assert logits.min() < 0 < logits.max()  # scores, not probabilities
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), cls, atol=1e-6)
    assert all(w.trainable for w in raw.weights)


@pytest.mark.parametrize("size", [320, 129])
def test_other_input_sizes_follow_the_anchors(ssd: Any, size: int) -> None:
    from facemask.model.ssd import build_ssd

    model = build_ssd(size)
    loc, cls = (np.asarray(t) for t in model(np.zeros((2, size, size, 3), np.float32)))
    anchors = len(generate_anchors(input_size=(size, size)))
    assert anchors != NUM_ANCHORS
    assert loc.shape == (2, anchors, 4) and cls.shape == (2, anchors, 2)
    # the same weights: only the input size differs
    for mine, upstream in zip(model.weights, ssd.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(upstream))


def test_bad_sizes_and_weights_are_clear_errors(ssd: Any, tmp_path: Path) -> None:
    from facemask.model.ssd import WeightsError, build_ssd

    with pytest.raises(ValueError, match="too small"):
        build_ssd(128)
    junk = tmp_path / "model.pb"
    junk.write_bytes(b"not a graph")
    with pytest.raises(WeightsError, match=r"model\.pb"):
        build_ssd(weights=tmp_path)  # a version directory: its model.pb
    junk.write_bytes(b"")  # a valid, empty graph
    with pytest.raises(WeightsError, match="no weights for layer conv2d_0"):
        build_ssd(weights=junk)
    with pytest.raises(WeightsError, match="no such frozen graph"):
        build_ssd(weights=tmp_path / "missing.pb")
