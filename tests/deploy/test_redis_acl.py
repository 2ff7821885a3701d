"""The Redis ACL users (facemask/infra/redisacl.py, deploy/redis/users.acl) against a real
redis-server 7: every service's user can do its own operations - the very commands and
Lua scripts the services send - and gets NOPERM for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.contracts.registry import read_cameras, unregister
from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess
from facemask.infra import redisacl, rollout
from facemask.infra.redisconn import connect, ensure_groups
from services.alerts.sinks.redisstream import XADD_ONCE
from services.inference.consumer import PUBLISH_AND_ACK
from tests.fixtures.paths import REPO_ROOT

LAYOUT = StreamLayout(partitions=2)
PASSWORDS = {name: f"{name}-password-0123456789" for name in redisacl.SERVICES}
F0, F1 = LAYOUT.frames(0), LAYOUT.frames(1)
D0 = LAYOUT.detections(0)
DL0 = LAYOUT.deadletter(0)
DELIVERED = "{" + LAYOUT.alerts + "}:delivered"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    workdir = tmp_path_factory.mktemp("acl")
    env = {f"REDIS_{n.upper()}_PASSWORD": p for n, p in PASSWORDS.items()}
    acl = workdir / "users.acl"
    acl.write_text(redisacl.render(LAYOUT, redisacl.hashes_from_env(env)))
    admin = "admin-password-0123456789"
    with acl.open("a") as out:  # the test's own setup user
        out.write(f"user admin on {redisacl.password_hash(admin)} ~* &* +@all\n")
    proc = RedisProcess(workdir / "data", extra_args=["--aclfile", str(acl)])
    with proc:
        setup = redis.Redis(port=proc.port, username="admin", password=admin)
        setup.xadd(F0, {"camera_id": "lobby", "frame": "x"})
        setup.xgroup_create(D0, "alerts", id="0", mkstream=True)
        setup.sadd(LAYOUT.cameras, "lobby")
        setup.hset(LAYOUT.camera("lobby"), mapping={"id": "lobby", "name": "Lobby"})
        setup.close()
        yield proc


def login(server: RedisProcess, user: str) -> Any:
    """A client of ``user`` through the project's own ``connect`` (URL with the user)."""
    return connect(f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{server.port}/0")


def allowed(fn: Callable[[], object]) -> None:
    fn()


def refused(fn: Callable[[], object]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        fn()


def test_no_login_may_only_ping(server: RedisProcess) -> None:
    anonymous = redis.Redis(port=server.port)
    assert anonymous.ping()
    refused(lambda: anonymous.xrange(F0))
    refused(lambda: anonymous.xadd(F0, {"a": "1"}))
    refused(lambda: anonymous.keys("*"))
    with pytest.raises(redis.AuthenticationError):
        connect(f"redis://ingest:wrong-password-xxxxxxxx@127.0.0.1:{server.port}/0").ping()


def test_ingest(server: RedisProcess) -> None:
    c = login(server, "ingest")
    allowed(c.ping)
    allowed(lambda: LAYOUT.check_meta(c))
    allowed(lambda: c.xadd(F1, {"camera_id": "door", "jpeg": b"\xff\xd8"}, maxlen=100))
    pipe = c.pipeline(transaction=False)  # services.ingest.registry heartbeat
    pipe.hset(LAYOUT.camera("door"), mapping={"id": "door"})
    pipe.expire(LAYOUT.camera("door"), 30)
    pipe.sadd(LAYOUT.cameras, "door")
    allowed(pipe.execute)
    allowed(lambda: c.hget(LAYOUT.camera("door"), "last_frame_id"))
    allowed(lambda: c.xrevrange(LAYOUT.alerts, count=1))  # voice prompt
    allowed(lambda: c.xread({LAYOUT.alerts: "$"}, block=1))
    refused(lambda: c.xrange(F0))  # cannot read frames back
    refused(lambda: c.xreadgroup("inference", "x", {F0: ">"}))
    refused(lambda: c.delete(F0))
    refused(lambda: c.xtrim(F0, maxlen=0))
    refused(lambda: c.xadd(D0, {"fake": "detections"}))
    refused(lambda: c.xadd(LAYOUT.alerts, {"fake": "alert"}))
    refused(lambda: c.hgetall(LAYOUT.camera("lobby")))
    refused(lambda: c.delete(LAYOUT.camera("lobby")))
    refused(lambda: c.keys("*"))
    refused(c.flushall)
    refused(lambda: c.config_get("*"))
    refused(lambda: c.eval("return redis.call('XADD', KEYS[1], '*', 'a', '1')", 1, D0))


def test_inference(server: RedisProcess) -> None:
    c = login(server, "inference")
    allowed(lambda: LAYOUT.check_meta(c))
    allowed(lambda: ensure_groups(c, [F0, F1], "inference", "0"))
    reply = c.xreadgroup("inference", "worker-1", {F0: ">"}, count=10)
    sid = reply[0][1][0][0]
    allowed(lambda: c.xpending_range(F0, "inference", min="-", max="+", count=10))
    allowed(lambda: c.xinfo_groups(F0))
    allowed(lambda: c.xrange(F0, min="-", count=10))  # lag
    allowed(lambda: c.xautoclaim(F0, "inference", "worker-1", 0, count=10))
    allowed(lambda: c.xclaim(F0, "inference", "worker-1", 0, [sid]))
    publish = c.register_script(PUBLISH_AND_ACK)
    # KEYS: frames, detections, dead letters; ARGV: group, consumer, then per frame its id,
    # the KEYS index of its target, MAXLEN, the count of field arguments and the fields
    args = ["inference", "worker-1", sid, 2, 100, 2, "status", "ok"]
    assert publish(keys=[F0, D0, DL0], args=args) == [1]
    allowed(lambda: c.xadd(DL0, {"reason": "undecodable"}))
    allowed(lambda: c.xack(F0, "inference", sid))
    refused(lambda: c.xadd(F0, {"camera_id": "forged"}))  # no frames of its own
    refused(lambda: c.delete(D0))
    refused(lambda: c.xgroup_destroy(F0, "inference"))
    refused(lambda: c.xadd(LAYOUT.alerts, {"fake": "alert"}))
    refused(lambda: c.hset(LAYOUT.camera("lobby"), "name", "x"))
    refused(lambda: c.smembers(LAYOUT.cameras))
    # a script gets no more than the user: XADD to a frame stream is refused inside it
    forge = "return redis.call('XADD', KEYS[2], '*', 'camera_id', 'forged')"
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)noperm|permission|can't access"):
        c.eval(forge, 2, D0, F0)


def test_inference_follows_the_promoted_model(server: RedisProcess) -> None:
    c = login(server, "inference")
    allowed(lambda: rollout.active(c, layout=LAYOUT))
    allowed(lambda: c.hgetall(LAYOUT.model_blob("0123456789abcdef")))
    allowed(lambda: c.exists(LAYOUT.model_blob("0123456789abcdef")))
    pubsub = c.pubsub()
    allowed(lambda: pubsub.subscribe(LAYOUT.model_events))
    assert pubsub.get_message(timeout=1.0)["type"] == "subscribe"
    pubsub.close()
    refused(lambda: c.set(LAYOUT.model_active, "{}"))  # promoting is an operator's job
    refused(lambda: c.hset(LAYOUT.model_blob("0123456789abcdef"), "model.pb", b"x"))
    refused(lambda: c.publish(LAYOUT.model_events, "{}"))
    other = c.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        other.subscribe(LAYOUT.alerts)  # no other channel
        other.get_message(timeout=1.0)
    other.close()


def test_alerts(server: RedisProcess) -> None:
    c = login(server, "alerts")
    allowed(lambda: LAYOUT.check_meta(c))
    allowed(lambda: ensure_groups(c, [D0], "alerts", "0"))
    allowed(lambda: c.xreadgroup("alerts", "alerts-1", {D0: ">"}, count=10))
    allowed(lambda: c.xautoclaim(D0, "alerts", "alerts-1", 0))
    allowed(lambda: c.xpending_range(D0, "alerts", min="-", max="+", count=10))
    allowed(lambda: c.xinfo_groups(D0))
    allowed(lambda: c.xrange(F0, min="-", max="+", count=1))  # snapshots / latest frame
    assert "lobby" in [cam.get("id") for cam in read_cameras(c, LAYOUT)]
    admin = login(server, "ingest")  # a stale camera for the alert service to remove
    admin.hset(LAYOUT.camera("stale"), mapping={"id": "stale"})
    admin.sadd(LAYOUT.cameras, "stale")
    allowed(lambda: unregister(c, LAYOUT, "stale"))  # DELETE /api/cameras/stale, retention
    assert "stale" not in [cam.get("id") for cam in read_cameras(c, LAYOUT)]
    allowed(lambda: c.xadd(LAYOUT.alerts_deadletter, {"reason": "malformed"}))
    sink = c.register_script(XADD_ONCE)
    assert sink(keys=[LAYOUT.alerts, DELIVERED], args=["a1", 100.0, 60.0, 100, "k", "v"]) == 1
    refused(lambda: c.xadd(F0, {"camera_id": "forged"}))  # may not write frames
    refused(lambda: c.xreadgroup("inference", "x", {F0: ">"}))
    refused(lambda: c.xack(F0, "inference", "0-1"))
    refused(lambda: c.xadd(D0, {"fake": "detections"}))
    refused(lambda: c.hset(LAYOUT.camera("lobby"), "name", "x"))
    refused(lambda: c.sadd(LAYOUT.cameras, "ghost"))
    refused(lambda: c.expire(LAYOUT.camera("lobby"), 1))
    refused(lambda: c.delete(LAYOUT.alerts))
    refused(lambda: c.delete(F0))
    refused(lambda: c.keys("*"))


def test_keda(server: RedisProcess) -> None:
    c = login(server, "keda")
    ensure_groups(login(server, "inference"), [F0], "inference", "0")
    allowed(lambda: c.xinfo_groups(F0))
    allowed(lambda: c.xpending(F0, "inference"))
    allowed(lambda: c.xlen(F0))
    refused(lambda: c.xrange(F0))
    refused(lambda: c.xadd(F0, {"a": "1"}))
    refused(lambda: c.xinfo_groups(D0))


def test_passwords_come_from_the_environment() -> None:
    with pytest.raises(ValueError, match="REDIS_KEDA_PASSWORD"):
        redisacl.hashes_from_env({"REDIS_INGEST_PASSWORD": "x" * 20})
    with pytest.raises(ValueError, match="REDIS_INGEST_PASSWORD"):
        redisacl.hashes_from_env({f"REDIS_{n.upper()}_PASSWORD": "short" for n in PASSWORDS})
    text = redisacl.render(LAYOUT, redisacl.hashes_from_env(
        {f"REDIS_{n.upper()}_PASSWORD": p for n, p in PASSWORDS.items()}
    ))  # fmt: skip
    assert not any(p in text for p in PASSWORDS.values())


def test_committed_acl_file_is_the_generated_template() -> None:
    committed = (REPO_ROOT / "deploy" / "redis" / "users.acl").read_text()
    assert committed == redisacl.render(StreamLayout(), redisacl.placeholders()), (
        "regenerate: python -m facemask.infra.redisacl --placeholders --out deploy/redis/users.acl"
    )


def test_the_template_cannot_be_loaded_as_is(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text(redisacl.render(StreamLayout(), redisacl.placeholders()))
    proc = RedisProcess(tmp_path / "data", extra_args=["--aclfile", str(acl)])
    with pytest.raises(RuntimeError, match="exited"):
        proc.start(timeout=10)


def test_patterns_follow_the_layout_prefix() -> None:
    text = redisacl.render(StreamLayout(prefix="site7"), redisacl.placeholders())
    assert "~site7:{p*}:frames" in text and "facemask:" not in text


def test_acl_files_are_in_sync_and_the_check_catches_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.deploy import checks

    assert checks.acl_problems() == []
    stale = tmp_path / "users.acl"
    stale.write_text(checks.REDIS_ACL_TEMPLATE.read_text().replace("+xadd", "+xadd +del", 1))
    monkeypatch.setattr(checks, "REDIS_ACL_TEMPLATE", stale)
    assert any("is stale" in p for p in checks.acl_problems())
