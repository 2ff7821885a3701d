"""Camera ids, capture times and label cardinality, property-based (hypothesis): any text
is either a valid camera id of the documented pattern or refused with ``bad_camera``; any
capture time is accepted exactly when it lies in the receiver's window; any stream of
camera ids leaves at most ``max_cameras`` + 1 series on a metric."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from facemask.contracts.wire import (
    CAMERA_ID_PATTERN,
    MIN_CAPTURE_TS,
    WireError,
    check_timestamp,
    is_valid_camera_id,
    validate_camera_id,
)
from facemask.infra.metrics import OVERFLOW_LABEL, LabelLimiter, limit_labels

SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
ids = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="".join(sorted(SAFE)) + "/\n \u202e_", max_size=70),
)


@given(ids)
@settings(max_examples=500, deadline=None)
def test_a_camera_id_is_valid_exactly_when_it_matches_the_pattern(camera_id: str) -> None:
    matches = re.fullmatch(CAMERA_ID_PATTERN, camera_id) is not None
    assert is_valid_camera_id(camera_id) is matches
    if matches:
        assert validate_camera_id(camera_id) == camera_id
        assert set(camera_id) <= SAFE and 1 <= len(camera_id) <= 64
        assert camera_id[0] not in "._-"
        return
    try:
        validate_camera_id(camera_id)
    except WireError as exc:
        assert exc.reason == "bad_camera" and len(exc.detail) < 250
    else:
        raise AssertionError(f"{camera_id!r} accepted")


NOW = 1_800_000_000.0


@given(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(NOW - 1e6, NOW + 1e6)),
    st.floats(1.0, 86400.0),
)
@settings(max_examples=500, deadline=None)
def test_a_capture_time_is_accepted_exactly_inside_the_window(ts: float, skew: float) -> None:
    inside = math.isfinite(ts) and MIN_CAPTURE_TS <= ts <= NOW + skew
    try:
        assert check_timestamp("ts", ts, now=NOW, max_skew=skew) == ts
        assert inside
    except WireError as exc:
        assert not inside and exc.reason == "bad_timestamp"


@given(st.lists(ids, max_size=300), st.integers(1, 20))
@settings(max_examples=100, deadline=None)
def test_any_stream_of_ids_leaves_at_most_max_plus_one_series(
    cameras: list[str], limit: int
) -> None:
    registry = CollectorRegistry()
    limiter = LabelLimiter(limit, valid=is_valid_camera_id)
    counter = limit_labels(Counter("facemask_p", "P.", ["camera_id"], registry=registry), limiter)
    for camera_id in cameras:
        counter.labels(camera_id).inc()
    values = {
        s.labels["camera_id"]
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "facemask_p_total"
    }
    assert len(values) <= limit + 1
    assert all(is_valid_camera_id(v) or v == OVERFLOW_LABEL for v in values)
    total = sum(
        registry.get_sample_value("facemask_p_total", {"camera_id": v}) or 0 for v in values
    )
    assert total == len(cameras)  # nothing lost: every update counted somewhere
