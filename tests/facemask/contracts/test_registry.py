"""The camera registration contract: what the ingest writes, what the readers see."""

from __future__ import annotations

import redis

from facemask.contracts.registry import last_frame_id, read_cameras, registered_ids, unregister
from facemask.contracts.streams import StreamLayout

LAYOUT = StreamLayout(prefix="reg")


def register(client: redis.Redis, camera_id: str, ttl: int | None = 30, **fields: str) -> None:
    key = LAYOUT.camera(camera_id)
    client.hset(key, mapping={"id": camera_id, "status": "up", **fields})
    if ttl:
        client.expire(key, ttl)
    client.sadd(LAYOUT.cameras, camera_id)


def test_read_cameras_lists_online_and_offline_sorted(redis_client: redis.Redis) -> None:
    register(redis_client, "lobby", name="Lobby", last_frame_id="41")
    register(redis_client, "door")
    redis_client.sadd(LAYOUT.cameras, "attic")  # registered once, hash expired since
    cameras = read_cameras(redis_client, LAYOUT)
    assert [c["id"] for c in cameras] == ["attic", "door", "lobby"]
    assert [c["online"] for c in cameras] == ["0", "1", "1"]
    assert cameras[2]["name"] == "Lobby"
    assert cameras[0] == {"id": "attic", "online": "0"}


def test_last_frame_id(redis_client: redis.Redis) -> None:
    register(redis_client, "lobby", last_frame_id="41")
    register(redis_client, "door", last_frame_id="not a number")
    assert last_frame_id(redis_client, LAYOUT, "lobby") == 41
    assert last_frame_id(redis_client, LAYOUT, "door") is None
    assert last_frame_id(redis_client, LAYOUT, "nobody") is None


def test_readers_list_only_valid_ids_and_at_most_limit(redis_client: redis.Redis) -> None:
    register(redis_client, "lobby")
    hostile = ["bad\nid", "\u202eevil", "a/b", "_other", "x" * 65, "with space"]
    for camera_id in hostile:
        register(redis_client, camera_id)
    assert [c["id"] for c in read_cameras(redis_client, LAYOUT)] == ["lobby"]
    redis_client.sadd(LAYOUT.cameras, *[f"cam-{i:04d}" for i in range(50)])
    listed = read_cameras(redis_client, LAYOUT, limit=10)
    assert [c["id"] for c in listed] == [f"cam-{i:04d}" for i in range(10)]
    ids, left_out = registered_ids(redis_client, LAYOUT, limit=10)
    assert len(ids) == 10 and left_out == 1 + len(hostile) + 50 - 10


def test_a_hash_cannot_claim_another_camera_id(redis_client: redis.Redis) -> None:
    register(redis_client, "door", id="lobby\nfake")
    (camera,) = read_cameras(redis_client, LAYOUT)
    assert camera["id"] == "door"


def test_unregister_removes_the_member_and_its_hash(redis_client: redis.Redis) -> None:
    register(redis_client, "lobby")
    register(redis_client, "door")
    unregister(redis_client, LAYOUT, "lobby")
    unregister(redis_client, LAYOUT, "attic")  # unknown: nothing to do
    assert [c["id"] for c in read_cameras(redis_client, LAYOUT)] == ["door"]
    assert not redis_client.exists(LAYOUT.camera("lobby"))
