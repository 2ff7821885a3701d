"""The Redis key layout: partitions, hash tags, names, the layout check."""

from __future__ import annotations

import fnmatch
import zlib

import pytest
import redis

from facemask.contracts.streams import LayoutMismatchError, StreamLayout


def test_keys_of_a_partition_share_one_cluster_hash_tag() -> None:
    layout = StreamLayout(partitions=4)
    for p in range(4):
        keys = [layout.frames(p), layout.detections(p), layout.deadletter(p)]
        assert {k.split("{")[1].split("}")[0] for k in keys} == {f"p{p}"}
        assert all(layout.partition_of_key(k) == p for k in keys)
    assert layout.all_frames() == [f"facemask:{{p{p}}}:frames" for p in range(4)]
    assert layout.all_detections()[3] == "facemask:{p3}:detections"


@pytest.mark.parametrize("camera_id", ["lobby", "door", "cam-07", "étage"])
def test_partition_is_crc32_modulo(camera_id: str) -> None:
    layout = StreamLayout(partitions=7)
    expected = zlib.crc32(camera_id.encode()) % 7
    assert layout.partition_of(camera_id) == expected
    assert layout.frames_for(camera_id) == layout.frames(expected)


def test_global_keys_and_prefix() -> None:
    layout = StreamLayout(prefix="site1", partitions=1)
    assert (layout.alerts, layout.cameras, layout.meta) == (
        "site1:alerts",
        "site1:cameras",
        "site1:meta",
    )
    assert layout.camera("door") == "site1:camera:door"
    assert layout.alerts_deadletter == "site1:alerts:deadletter"


def test_model_keys_follow_the_prefix() -> None:
    layout = StreamLayout(prefix="site1")
    assert (layout.model_active, layout.model_events) == (
        "site1:model:active",
        "site1:model:events",
    )
    assert layout.model_blob("0123456789abcdef") == "site1:model:blob:0123456789abcdef"
    assert fnmatch.fnmatchcase(layout.model_blob("x"), layout.model_keys)
    assert fnmatch.fnmatchcase(layout.model_active, layout.model_keys)
    assert not fnmatch.fnmatchcase(StreamLayout().model_active, layout.model_keys)


@pytest.mark.parametrize(
    ("prefix", "partitions"), [("", 4), ("a b", 4), ("x{y}", 4), ("facemask", 0)]
)
def test_invalid_layouts(prefix: str, partitions: int) -> None:
    with pytest.raises(ValueError):
        StreamLayout(prefix=prefix, partitions=partitions)


def test_partition_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        StreamLayout(partitions=2).frames(2)


def test_check_meta_records_and_enforces_the_partition_count(redis_client: redis.Redis) -> None:
    StreamLayout(prefix="t", partitions=4).check_meta(redis_client)
    StreamLayout(prefix="t", partitions=4).check_meta(redis_client)  # the same: fine
    with pytest.raises(LayoutMismatchError, match="FACEMASK_STREAM_PARTITIONS=4"):
        StreamLayout(prefix="t", partitions=8).check_meta(redis_client)


@pytest.mark.parametrize("prefix", ["facemask", "cam:frames", "site-a:detections"])
def test_every_partition_pattern_matches_each_partitions_key_and_nothing_else(
    prefix: str,
) -> None:
    import fnmatch

    layout = StreamLayout(prefix, 3)
    pattern = layout.every_partition("frames")
    assert all(fnmatch.fnmatchcase(layout.frames(p), pattern) for p in range(3))
    assert not fnmatch.fnmatchcase(layout.detections(0), pattern)
    assert layout.every_partition("detections") != pattern
