"""Stalls of the running multi-process pipeline, made with SIGSTOP: a frozen inference
replica (its peer takes over its pending frames after ``claim_idle``, nothing is lost, and
it resumes after SIGCONT) and a frozen Redis (every service notices: inference
NOT_SERVING, alerts not ready, the ingest node's frames stall; all of it clears by itself
after SIGCONT). Every wait is bounded; everything is on loopback."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from facemask.dev.waiting import wait_until
from tests.faults.test_faults import (
    pending_of,
    slideshow_nodes,
    stop_nodes_and_drain,
    wait_more_answers,
)
from tests.fixtures.pipeline import Child, Pipeline, slideshow_dir, total

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def freeze(child: Child) -> None:
    child.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]


def thaw(child: Child) -> None:
    child.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]


def stream_requests(child: Child) -> float:
    return total(child.metrics(), "facemask_inference_requests_total", source="stream")


def test_a_frozen_replica_is_taken_over_and_resumes_after_sigcont(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    a = pipe.start_inference("inference-a", FACEMASK_INFERENCE_MAX_INFLIGHT="32")
    b = pipe.start_inference("inference-b")
    alerts = pipe.start_alerts()
    for child in (a, b, alerts):
        pipe.wait_ready(child)
    nodes = slideshow_nodes(pipe, tmp_path, 2)
    wait_more_answers(pipe, 20, 60, [a, b, alerts, *nodes])
    # Freeze A while it holds unacknowledged frames (it cannot even say it is stuck).
    stranded = 0
    for _ in range(300):
        if pending_of(pipe, "inference-a") > 0:
            freeze(a)
            stranded = pending_of(pipe, "inference-a")
            if stranded:
                break
            thaw(a)
        time.sleep(0.01)
    assert stranded > 0, "replica A never held a pending frame"
    try:
        before = b.metrics()
        wait_until(lambda: pending_of(pipe, "inference-a") == 0, 30, "B takes over A's frames")
        wait_more_answers(pipe, 10, 40, [b, alerts, *nodes])
        after = b.metrics()
        # Every stranded frame is B's now: reclaimed and run, or - on a loaded machine, when
        # MAXLEN trimmed it from the frame stream while A sat on it - counted as lost.
        reclaimed, lost = (
            total(after, name) - total(before, name)
            for name in (
                "facemask_inference_reclaimed_total",
                "facemask_inference_frames_lost_total",
            )
        )
        assert reclaimed + lost >= stranded, (reclaimed, lost, stranded)
    finally:
        thaw(a)
    # A resumes: ready, and it takes its share of frames again.
    wait_until(lambda: total(a.metrics(), "facemask_inference_ready") == 1, 30, "A ready")
    a_before = stream_requests(a)
    wait_until(lambda: stream_requests(a) > a_before, 40, "A processes frames again")
    stop_nodes_and_drain(pipe, nodes)
    pipe.assert_every_frame_answered_once()
    for child in (a, b, alerts):
        assert child.alive(), child.log_tail()
    assert '"msg": "supervisor verdict' not in (a.log_tail(200_000) + b.log_tail(200_000))


def test_a_frozen_redis_is_noticed_by_every_service_and_cleared_after_sigcont(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipe = pipeline
    assert pipe.redis is not None and pipe.redis.proc is not None
    # Default supervision settings (stall_timeout 8 s, a check every second): the goal is
    # every stall noticed within 10 s (measured and printed; the bound here is generous).
    inference = pipe.start_inference()
    alerts = pipe.start_alerts()
    pipe.wait_ready(inference)
    pipe.wait_ready(alerts)
    folder = slideshow_dir(tmp_path / "slides", "cam0", ["demo2.jpg"])
    node = pipe.start_ingest("ingest-0", f"id=cam0,source={folder},fps=4")
    nodes = [node]
    wait_more_answers(pipe, 10, 60, [inference, alerts, node])
    frozen_at = time.monotonic()
    pipe.redis.proc.send_signal(signal.SIGSTOP)
    noticed: dict[str, float] = {}
    try:

        def all_noticed() -> bool:
            if (
                "inference" not in noticed
                and total(inference.metrics(), "facemask_inference_ready") == 0
            ):
                noticed["inference"] = time.monotonic() - frozen_at
            if "alerts" not in noticed and total(alerts.metrics(), "facemask_alerts_ready") == 0:
                noticed["alerts"] = time.monotonic() - frozen_at
            if (
                "ingest" not in noticed
                and total(node.metrics(), "facemask_ingest_stalled", watch="frames") == 1
            ):
                noticed["ingest"] = time.monotonic() - frozen_at
            return len(noticed) == 3

        try:
            wait_until(all_noticed, 40, "every service notices the frozen Redis", 0.2)
        except BaseException:
            tails = "\n".join(c.log_tail(1500) for c in (inference, alerts, node))
            pytest.fail(f"only {sorted(noticed)} noticed the frozen Redis:\n{tails}")
    finally:
        pipe.redis.proc.send_signal(signal.SIGCONT)
    print(f"\nstall detected after (s): { ({k: round(v, 1) for k, v in noticed.items()}) }")
    wait_until(
        lambda: (
            total(inference.metrics(), "facemask_inference_ready") == 1
            and total(alerts.metrics(), "facemask_alerts_ready") == 1
            and total(node.metrics(), "facemask_ingest_stalled", watch="frames") == 0
        ),
        40,
        "every service ready again by itself",
        0.2,
    )
    assert total(node.metrics(), "facemask_ingest_stalls_total", watch="frames") >= 1
    wait_more_answers(pipe, 10, 60, [inference, alerts, node])
    stop_nodes_and_drain(pipe, nodes)
    pipe.assert_every_frame_answered_once()
    for child in (inference, alerts):
        assert child.alive(), child.log_tail()
