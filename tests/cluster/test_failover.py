"""A Redis Cluster master failover under the inference stream consumer (issue 13, item 2):
3 masters with a replica each; while frames flow, the replica of the master holding a
partition takes over (``CLUSTER FAILOVER``: the old master becomes its replica, clients
get ``MOVED`` / ``READONLY``). The consumer follows the new master by itself, no thread
dies, and every frame is answered. Stand-in detector (no TensorFlow); bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient

from facemask.dev.waiting import WaitTimeoutError, wait_until
from tests.faults.test_redis_faults import LAYOUT, Running, answered, push
from tests.fixtures.cluster import RedisCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def promote(replica: int, promoted: Callable[[], bool], attempts: int = 4) -> None:
    """``CLUSTER FAILOVER`` on the replica on port ``replica`` once it is in sync with its
    master, again when a manual failover timed out (Redis aborts one that cannot reach an
    agreement in time, e.g. on a loaded machine) until ``promoted()``."""
    direct = redis.Redis(port=replica, decode_responses=True)
    try:
        for _ in range(attempts):
            wait_until(
                lambda: direct.info("replication").get("master_link_status") == "up",
                30,
                "the replica in sync",
            )
            assert direct.execute_command("CLUSTER FAILOVER") in ("OK", True)
            try:
                wait_until(promoted, 15, "the replica promoted")
                return
            except WaitTimeoutError:
                continue
        raise AssertionError(f"the replica on port {replica} was never promoted")
    finally:
        direct.close()


def push_when_routed(client: ClusterClient, frames: int, start: int) -> list[tuple[str, str]]:
    """:func:`push` as an edge node would after a master crashed: for a moment the
    client's slot map may still name the dead node (connection refused) until the new
    map reaches it, so the frames are sent again until they all went through."""
    pushed: list[tuple[str, str]] = []

    def attempt() -> bool:
        try:
            pushed[:] = push(client, frames, start=start)
        except redis.ConnectionError:
            return False
        return True

    wait_until(attempt, 30, "writes routed to the new master")
    return pushed


def test_a_master_failover_is_followed_and_every_frame_answered(
    redis_cluster_replicated: RedisCluster,
) -> None:
    nodes = redis_cluster_replicated
    seed = nodes.nodes[0].port
    client = ClusterClient(host="127.0.0.1", port=seed)
    running = Running(nodes.url, detector_delay=0.02)
    try:
        first = push(client, 10)
        wait_until(lambda: set(first) <= answered(client), 30, "frames before the failover")
        master = nodes.node_of(LAYOUT.frames(0))
        replica = nodes.replica_of(master)
        second = push(client, 10, start=100)
        promote(replica, lambda: nodes.role(replica) == "master")
        wait_until(lambda: nodes.role(master) == "slave", 30, "the old master a replica")
        third = push(client, 10, start=200)
        everything = set(first) | set(second) | set(third)
        wait_until(lambda: everything <= answered(client), 30, "every frame answered")
        wait_until(lambda: running.consumer.inflight == 0, 10, "every slot free")
        assert not running.consumer.failed and running.consumer.streams.worker.alive
        lost = running.value("facemask_inference_frames_lost_total", reason="nogroup")
        assert lost == 0  # a planned failover loses nothing

        # Now the new master dies with frames in flight: its replica (the old master)
        # takes over after the node timeout; the consumer rides the outage out.
        fourth = push(client, 10, start=300)
        (dead,) = [n for n in nodes.nodes if n.port == replica]
        dead.stop()
        wait_until(lambda: nodes.role(master) == "master", 30, "the automatic failover")
        fifth = push_when_routed(client, 10, start=400)
        wait_until(lambda: set(fifth) <= answered(client), 30, "frames after the crash")
        wait_until(lambda: running.consumer.inflight == 0, 20, "every slot free")
        missing = (set(fourth) - answered(client)) - everything
        lost = sum(
            running.value("facemask_inference_frames_lost_total", reason=r)
            for r in ("nogroup", "vanished")
        )
        # Asynchronous replication may lose the newest writes of the dead master: a frame
        # whose entry survived is answered (reclaimed), one whose pending entry did not is
        # counted lost, one that was never replicated is gone with the master.
        assert not running.consumer.failed and running.consumer.streams.worker.alive
        faults = {
            kind: running.value("facemask_inference_redis_faults_total", kind=kind)
            for kind in ("connection", "timeout", "cluster", "readonly")
        }
        print(
            f"failover: {len(everything)} frames answered; after the crash "
            f"{len(fourth) - len(missing)}/{len(fourth)} answered, {int(lost)} counted lost; "
            f"faults survived {faults}"
        )
    finally:
        running.close()
        client.close()
