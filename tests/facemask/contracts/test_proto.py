"""Detections <-> facemask.v1 messages, both ways."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.contracts.proto import PROTO_LABELS, detections_from_proto, detections_to_proto
from facemask.core.types import Detections
from facemask.v1 import detector_pb2


def test_round_trip_is_exact() -> None:
    rng = np.random.default_rng(5)
    xy = rng.uniform(-0.05, 0.9, size=(30, 2))
    faces = Detections(
        np.concatenate([xy, xy + rng.uniform(0.01, 0.3, size=(30, 2))], axis=1),
        rng.uniform(0, 1, 30).astype(np.float32),  # the model's scores are float32
        rng.integers(0, 2, 30),
    )
    messages = detections_to_proto(faces, 1280, 720)
    assert len(messages) == 30
    back = detections_from_proto(messages)
    np.testing.assert_array_equal(back.xyxy, faces.xyxy)  # doubles: bit-exact
    np.testing.assert_array_equal(back.class_ids, faces.class_ids)
    np.testing.assert_array_equal(back.scores, faces.scores)  # float32 survives
    pixels = [[m.box.x1, m.box.y1, m.box.x2, m.box.y2] for m in messages]
    assert pixels == faces.pixels(1280, 720).tolist()
    assert [m.label_name for m in messages] == faces.labels
    assert [m.label for m in messages] == [PROTO_LABELS[c] for c in faces.class_ids]


def test_empty_and_unknown_label() -> None:
    assert detections_to_proto(Detections.empty(), 10, 10) == []
    assert len(detections_from_proto([])) == 0
    with pytest.raises(ValueError, match="no known label"):
        detections_from_proto([detector_pb2.Detection(label=detector_pb2.LABEL_UNSPECIFIED)])
