"""Cluster rollout in a real Redis: promote uploads the files before the key changes and
publishes the change, replicas download and verify, rollback, and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.infra import rollout
from facemask.infra.rollout import ActiveModel, RolloutError
from facemask.model.registry import ModelRegistry, ModelVersion
from tests.fixtures.registry import small_card

LAYOUT = StreamLayout()
NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture()
def events(redis_client: redis.Redis) -> Iterator[redis.client.PubSub]:
    """A subscription to the model events channel."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(LAYOUT.model_events)
    pubsub.get_message(timeout=5.0)  # the subscribe confirmation
    try:
        yield pubsub
    finally:
        pubsub.close()


def _next_event(pubsub: redis.client.PubSub) -> dict[str, object]:
    message = pubsub.get_message(timeout=5.0)
    assert message is not None, "no model event published"
    return json.loads(message["data"])


def _other_version(tmp_path: Path, registry: ModelRegistry, tag: str) -> ModelVersion:
    pb = tmp_path / f"{tag}.pb"
    pb.write_bytes(f"another graph {tag}".encode())
    return registry.add({"tf": pb}, small_card())


def test_promote_uploads_the_files_then_sets_the_key_and_publishes(
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
    events: redis.client.PubSub,
) -> None:
    promoted = rollout.promote(
        redis_client, model_registry, upstream_copy.version[:8], by="ops", clock=clock
    )
    assert promoted == ActiveModel(upstream_copy.version, None, "2026-05-06T07:08:09+00:00", "ops")
    assert rollout.active(redis_client) == promoted
    assert _next_event(events) == json.loads(promoted.to_json())
    blob = redis_client.hgetall(LAYOUT.model_blob(upstream_copy.version))
    assert set(blob) == {b"card.json", b"model.pb", b"model.float32.tflite", b"model.int8.tflite"}
    assert blob[b"model.pb"] == upstream_copy.file("tf").read_bytes()


def test_a_replica_with_an_empty_store_downloads_and_verifies_the_version(
    tmp_path: Path,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
) -> None:
    rollout.promote(redis_client, model_registry, upstream_copy.version)
    replica = ModelRegistry(tmp_path / "replica")
    fetched = rollout.fetch_version(redis_client, replica, upstream_copy.version)
    assert fetched.path == replica.root / upstream_copy.version
    assert fetched.card == upstream_copy.card
    for variant in ("tf", "float32", "int8"):
        assert fetched.file(variant).read_bytes() == upstream_copy.file(variant).read_bytes()
    # stored now: a second fetch reads nothing from Redis
    redis_client.delete(LAYOUT.model_blob(upstream_copy.version))
    assert rollout.fetch_version(redis_client, replica, upstream_copy.version).path == fetched.path


def test_a_tampered_blob_is_refused_and_nothing_is_stored(
    tmp_path: Path,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
) -> None:
    rollout.promote(redis_client, model_registry, upstream_copy.version)
    key = LAYOUT.model_blob(upstream_copy.version)
    original = redis_client.hget(key, "model.int8.tflite")
    assert original is not None
    redis_client.hset(key, "model.int8.tflite", original[:-1] + bytes([original[-1] ^ 1]))
    replica = ModelRegistry(tmp_path / "replica")
    with pytest.raises(RolloutError, match=r"from Redis refused: model\.int8\.tflite .* tampered"):
        rollout.fetch_version(redis_client, replica, upstream_copy.version)
    assert not replica.has(upstream_copy.version)


def test_a_corrupt_local_copy_is_an_error(
    redis_client: redis.Redis, model_registry: ModelRegistry, upstream_copy: ModelVersion
) -> None:
    upstream_copy.file("float32").write_bytes(b"broken")
    with pytest.raises(RolloutError, match="corrupt"):
        rollout.fetch_version(redis_client, model_registry, upstream_copy.version)
    with pytest.raises(RolloutError, match="cannot upload"):
        rollout.promote(redis_client, model_registry, upstream_copy.version)
    assert rollout.active(redis_client) is None


def test_missing_files_in_redis_are_a_clear_error(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    with pytest.raises(RolloutError, match="has no files in Redis"):
        rollout.fetch_version(redis_client, ModelRegistry(tmp_path / "r"), "0123456789abcdef")


def test_rollback_returns_to_the_previous_version_and_again_forward(
    tmp_path: Path,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
    events: redis.client.PubSub,
) -> None:
    second = _other_version(tmp_path, model_registry, "b")
    rollout.promote(redis_client, model_registry, upstream_copy.version)
    rollout.promote(redis_client, model_registry, second.version, by="ci")
    _next_event(events), _next_event(events)
    back = rollout.rollback(redis_client, model_registry, by="ops", clock=clock)
    assert (back.version, back.previous, back.by) == (upstream_copy.version, second.version, "ops")
    assert rollout.active(redis_client) == back
    assert _next_event(events)["version"] == upstream_copy.version
    forward = rollout.rollback(redis_client, model_registry)
    assert (forward.version, forward.previous) == (second.version, upstream_copy.version)


def test_rollback_uploads_the_target_again_when_redis_lost_its_files(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    first = _other_version(tmp_path, model_registry, "c")
    second = _other_version(tmp_path, model_registry, "d")
    rollout.promote(redis_client, model_registry, first.version)
    rollout.promote(redis_client, model_registry, second.version)
    redis_client.delete(LAYOUT.model_blob(first.version))
    assert rollout.rollback(redis_client, model_registry).version == first.version
    assert redis_client.hexists(LAYOUT.model_blob(first.version), "model.pb")


def test_rollback_without_a_previous_version_is_a_clear_error(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollout.rollback(redis_client, model_registry)
    only = _other_version(tmp_path, model_registry, "e")
    promoted = rollout.promote(redis_client, model_registry, only.version)
    with pytest.raises(RolloutError, match=r"nothing to roll back to: .* configured model"):
        rollout.rollback(redis_client, model_registry)
    assert rollout.active(redis_client) == promoted


def test_upstream_is_promoted_without_files(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    trained = _other_version(tmp_path, model_registry, "f")
    rollout.promote(redis_client, model_registry, trained.version)
    back = rollout.promote(redis_client, model_registry, "upstream")
    assert (back.version, back.previous) == ("upstream", trained.version)
    assert not redis_client.exists(LAYOUT.model_blob("upstream"))
    assert rollout.fetch_version(redis_client, model_registry, "upstream").version == "upstream"
    assert rollout.rollback(redis_client, model_registry).version == trained.version


def test_promoting_the_active_version_again_changes_nothing(
    tmp_path: Path,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    events: redis.client.PubSub,
) -> None:
    first = _other_version(tmp_path, model_registry, "g")
    promoted = rollout.promote(redis_client, model_registry, first.version)
    _next_event(events)
    assert rollout.promote(redis_client, model_registry, first.version, by="x") == promoted
    assert events.get_message(timeout=0.2) is None


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("0123456789abcdef", "unknown model version"),
        ("../../etc/passwd", "not a model file|does not exist"),
        ("deadbeef; FLUSHALL", "unknown model version"),
    ],
)
def test_unknown_or_hostile_references_are_refused_before_anything_changes(
    redis_client: redis.Redis, model_registry: ModelRegistry, ref: str, message: str
) -> None:
    with pytest.raises(RolloutError, match=message):
        rollout.promote(redis_client, model_registry, ref)
    assert redis_client.keys("facemask:model:*") == []


@pytest.mark.parametrize("version", ["../../etc", "ABCDEF0123456789", "x" * 16, ""])
def test_hostile_versions_are_never_fetched(
    tmp_path: Path, redis_client: redis.Redis, version: str
) -> None:
    redis_client.hset(LAYOUT.model_blob(version), "model.pb", b"x")
    with pytest.raises(RolloutError, match="is not a model version"):
        rollout.fetch_version(redis_client, ModelRegistry(tmp_path / "r"), version)
    assert not (tmp_path / "r").exists()


def test_a_loose_model_file_must_be_stored_before_it_is_promoted(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    loose = tmp_path / "exported.pb"
    loose.write_bytes(b"not stored")
    with pytest.raises(RolloutError, match="not a stored model version"):
        rollout.promote(redis_client, model_registry, str(loose))


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"previous": null}',
        b'{"version": "../x", "previous": null}',
        b'{"version": "0123456789abcdef", "previous": "../../x"}',
    ],
)
def test_an_invalid_active_record_is_a_clear_error(redis_client: redis.Redis, raw: bytes) -> None:
    redis_client.set(LAYOUT.model_active, raw)
    with pytest.raises(RolloutError, match="invalid active model record"):
        rollout.active(redis_client)


def test_promote_replaces_an_invalid_record(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    redis_client.set(LAYOUT.model_active, b"garbage")
    version = _other_version(tmp_path, model_registry, "h")
    promoted = rollout.promote(redis_client, model_registry, version.version)
    assert promoted.previous is None and rollout.active(redis_client) == promoted


def test_a_concurrent_promote_is_not_lost(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    first = _other_version(tmp_path, model_registry, "i")
    second = _other_version(tmp_path, model_registry, "j")
    raced: list[bool] = []

    def racing_clock() -> datetime:
        if not raced:  # another operator promotes between our read and our write
            raced.append(True)
            rollout.promote(redis_client, model_registry, first.version)
        return NOW

    promoted = rollout.promote(redis_client, model_registry, second.version, clock=racing_clock)
    assert (promoted.version, promoted.previous) == (second.version, first.version)
    assert rollout.active(redis_client) == promoted


def test_keys_follow_the_layout_prefix(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    site = StreamLayout(prefix="site1")
    version = _other_version(tmp_path, model_registry, "k")
    rollout.promote(redis_client, model_registry, version.version, layout=site)
    assert rollout.active(redis_client) is None
    assert rollout.active(redis_client, layout=site) is not None
    assert redis_client.exists(site.model_blob(version.version))
    replica = ModelRegistry(tmp_path / "replica")
    with pytest.raises(RolloutError, match="has no files in Redis"):
        rollout.fetch_version(redis_client, replica, version.version)
    assert rollout.fetch_version(redis_client, replica, version.version, layout=site).version == (
        version.version
    )


def test_redis_keeps_the_files_of_the_active_and_previous_versions_only(
    tmp_path: Path, redis_client: redis.Redis, model_registry: ModelRegistry
) -> None:
    a, b, c = (_other_version(tmp_path, model_registry, tag) for tag in ("l", "m", "n"))
    for version in (a, b, c):
        rollout.promote(redis_client, model_registry, version.version)
    stored = {k.decode() for k in redis_client.keys(LAYOUT.model_blob("*"))}
    assert stored == {LAYOUT.model_blob(b.version), LAYOUT.model_blob(c.version)}
    assert rollout.rollback(redis_client, model_registry).version == b.version
    assert redis_client.exists(LAYOUT.model_blob(c.version))  # the new previous
    rollout.promote(redis_client, model_registry, a.version)  # again: uploaded again
    stored = {k.decode() for k in redis_client.keys(LAYOUT.model_blob("*"))}
    assert stored == {LAYOUT.model_blob(a.version), LAYOUT.model_blob(b.version)}
    replica = ModelRegistry(tmp_path / "replica")
    assert rollout.fetch_version(redis_client, replica, a.version).version == a.version
