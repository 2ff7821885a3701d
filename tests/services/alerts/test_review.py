"""Review of alerts: in the store (who/when/note/label round trip, labels that fit the
state, reviews kept when a batch is processed again and across a restart, pruned with
their alerts, pages filtered by state on an index: every filter combination, no sort), and
in the running service (real Redis and detections entries: the clean frame, the violator
singled out on the snapshot, the token, a restart that processes every entry again)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import redis

from facemask.core.annotate import HIGHLIGHT_RGB
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from services.alerts.records import REVIEW_STATES, Review
from services.alerts.store import AlertStore
from tests.services.alerts.conftest import (
    GROUP,
    LAYOUT,
    PERSON_A,
    PERSON_B,
    PERSON_C,
    Feeder,
    bare,
    drained,
    fast_settings,
    masked,
    metric,
    running,
)
from tests.services.alerts.test_store import record


@pytest.fixture()
def store(tmp_path: Path) -> AlertStore:
    return AlertStore(tmp_path)


@pytest.mark.parametrize(
    ("state", "label", "stored"),
    [
        ("acknowledged", None, None),
        ("confirmed", None, "no_mask"),
        ("confirmed", "no_mask", "no_mask"),
        ("false_positive", None, "mask"),
        ("false_positive", "mask", "mask"),
        ("false_positive", "none", "none"),
        ("new", None, None),
    ],
)
def test_a_review_round_trips(store: AlertStore, state: Any, label: Any, stored: Any) -> None:
    store.commit_batch([record("a" * 32)], ["webhook"], {}, {})
    assert store.get_alert("a" * 32).review == Review()  # type: ignore[union-attr]
    after = store.review("a" * 32, state, by="ana", at=1234.5, note="seen it", label=label)
    assert after is not None
    assert after.review == Review(state, "ana", 1234.5, "seen it", stored)
    assert store.get_alert("a" * 32) == after


@pytest.mark.parametrize(
    ("state", "label"),
    [
        ("acknowledged", "mask"),
        ("new", "none"),
        ("confirmed", "mask"),
        ("false_positive", "no_mask"),
        ("false_positive", "hat"),
    ],
)
def test_a_label_must_fit_the_state(store: AlertStore, state: Any, label: Any) -> None:
    store.commit_batch([record("a" * 32)], [], {}, {})
    with pytest.raises(ValueError, match="does not go with state"):
        store.review("a" * 32, state, by="ana", at=1.0, label=label)
    assert store.get_alert("a" * 32).review == Review()  # type: ignore[union-attr]


def test_an_unknown_alert_has_no_review(store: AlertStore) -> None:
    assert store.review("b" * 32, "confirmed", by="ana", at=1.0) is None


def test_a_review_survives_reprocessing_restart_and_goes_with_pruning(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    (alert,) = store.commit_batch([record("a" * 32, ts=100.0)], ["webhook"], {}, {})
    store.review("a" * 32, "false_positive", by="ana", at=200.0, note="poster", label="none")
    # The consumer processes the same entry again (crash before XACK): the alert is the
    # same id, stored once, no second delivery, and the review is untouched.
    assert store.commit_batch([record("a" * 32, ts=100.0)], ["webhook"], {}, {}) == []
    assert len(store.deliveries("a" * 32)) == 1
    store.close()
    reopened = AlertStore(tmp_path)
    kept = reopened.get_alert("a" * 32)
    assert kept is not None and kept.seq == alert.seq
    assert kept.review == Review("false_positive", "ana", 200.0, "poster", "none")
    assert [a.alert_id for a in reopened.prune_alerts(150.0)] == ["a" * 32]
    assert reopened.get_alert("a" * 32) is None


def _alerts(store: AlertStore) -> dict[str, str]:
    """16 alerts on two cameras, four of each state, two pairs sharing a capture time."""
    states: dict[str, str] = {}
    batch = []
    for i in range(16):
        ts = 1000.0 + (i // 2 if i < 4 else i)  # 0 and 1, 2 and 3 share their ts
        batch.append(record(f"{i:032x}", "lobby" if i % 2 else "door", ts))
        states[f"{i:032x}"] = REVIEW_STATES[i % 4]
    store.commit_batch(batch, [], {}, {})
    for alert_id, state in states.items():
        if state != "new":
            store.review(alert_id, state, by="ana", at=2000.0)  # type: ignore[arg-type]
    return states


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"state": "new"},
        {"state": "confirmed"},
        {"state": "reviewed"},
        {"state": "acknowledged", "camera_id": "lobby"},
        {"state": "reviewed", "camera_id": "door"},
        {"state": "false_positive", "since": 1003.0, "until": 1014.0},
        {"state": "reviewed", "camera_id": "lobby", "since": 1001.0},
        {"camera_id": "door", "until": 1012.0},
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_pages_filtered_by_state_follow_their_cursor(
    store: AlertStore, query: dict[str, Any], limit: int
) -> None:
    states = _alerts(store)
    wanted = {"reviewed": {"confirmed", "false_positive"}}.get(query.get("state", ""))
    expected = [
        a
        for a in sorted(
            (store.get_alert(i) for i in states),
            key=lambda a: (a.ts, a.seq),  # type: ignore[union-attr]
            reverse=True,
        )
        if a is not None
        and (not query.get("state") or a.review.state in (wanted or {query["state"]}))
        and a.camera_id == query.get("camera_id", a.camera_id)
        and query.get("since", 0) <= a.ts < query.get("until", 1e9)
    ]
    assert expected  # every query names some alerts
    seen, cursor = [], None
    while True:
        page, cursor = store.list_alerts(limit=limit, cursor=cursor, **query)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            break
    assert seen == expected


@pytest.mark.parametrize(
    "query",
    [
        {"state": "new"},
        {"state": "reviewed"},
        {"state": "confirmed", "camera_id": "lobby"},
        {"state": "reviewed", "camera_id": "lobby"},
        {"state": "acknowledged", "since": 1.0, "until": 2.0},
        {"camera_id": "door"},
        {},
    ],
)
def test_every_filter_reads_one_index_in_order(store: AlertStore, query: dict[str, Any]) -> None:
    """The plan of each page (with a cursor too) searches an index and never sorts."""
    _alerts(store)
    _, cursor = store.list_alerts(limit=1, **query)
    statements: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(statements.append)
    store.list_alerts(limit=1, **query)
    if cursor:
        store.list_alerts(limit=1, cursor=cursor, **query)
    conn.set_trace_callback(None)
    selects = [s for s in statements if s.startswith("SELECT")]
    assert len(selects) == (2 if cursor else 1)
    for sql in selects:
        plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING INDEX alerts_" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        if query.get("state"):
            assert "state" in plan or "reviewed" in plan, plan


def test_old_alerts_are_new_after_the_migration(tmp_path: Path) -> None:
    from tests.services.alerts.test_store import release_1_database

    old = release_1_database(tmp_path)
    store = AlertStore(tmp_path)
    assert all(store.get_alert(a.alert_id).review == Review() for a in old)  # type: ignore[union-attr]
    page, _ = store.list_alerts(state="new", limit=100)
    assert {a.alert_id for a in page} == {a.alert_id for a in old}
    assert store.list_alerts(state="reviewed")[0] == []
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"alerts_state_ts", "alerts_reviewed_ts", "alerts_camera_reviewed_ts"} <= indexes


# -- the running service: real Redis, real detections entries, HTTP ------------------------

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AMBER_BGR = np.array(HIGHLIGHT_RGB[::-1])


def _near(image: np.ndarray, x: int, y: int, colour: np.ndarray) -> bool:
    patch = image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - colour).sum(axis=1) < 120).any())


def test_the_service_keeps_reviews_through_restart_and_reprocessing(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    settings = fast_settings(
        redis_server.url, tmp_path / "state", api_token=TOKEN, rule_k=2, rule_n=3, cooldown=0.0
    )
    faces = [bare(PERSON_A), masked(PERSON_B), bare(PERSON_C, 0.3)]  # C: below min_score
    width = sample_jpeg[1]
    with running(settings) as service:
        base = f"http://127.0.0.1:{service.port}"
        Feeder(redis_client, "lobby", sample_jpeg).frames(2, faces)
        wait_until(lambda: drained(redis_client), 10, "entries consumed")
        (alert,) = httpx.get(f"{base}/api/alerts", headers=AUTH).json()["alerts"]
        assert alert["box"] == list(PERSON_A) and alert["review"]["state"] == "new"
        # The clean frame is the frame stream's JPEG, byte for byte.
        frame = httpx.get(f"{base}{alert['frame_url']}", headers=AUTH)
        assert frame.status_code == 200 and frame.content == sample_jpeg[0]
        # The snapshot singles the violator out (amber) beside a crop; C stays red.
        shot = httpx.get(f"{base}{alert['snapshot_url']}", headers=AUTH).content
        image = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] == width + round(width / 3)
        assert _near(image, PERSON_A[0], 80, AMBER_BGR)
        assert _near(image, PERSON_C[0], 100, np.array([0, 0, 255]))
        # A review needs the token.
        url = f"{base}/api/alerts/{alert['id']}/review"
        body = {"state": "false_positive", "label": "none", "by": "ana", "note": "poster"}
        assert httpx.post(url, json=body).status_code == 401
        done = httpx.post(url, json=body, headers=AUTH)
        assert done.status_code == 200, done.text
        review = done.json()["review"]
        assert review["state"] == "false_positive" and review["label"] == "none"
        assert abs(review["at"] - time.time()) < 60
    # Process every entry again from scratch (engine state and offsets wiped, the group
    # rewound): the same alert comes out, is stored once, and keeps its review.
    db = sqlite3.connect(tmp_path / "state" / "alerts.sqlite3")
    with db:
        db.execute("DELETE FROM camera_state")
        db.execute("DELETE FROM offsets")
    db.close()
    for key in LAYOUT.all_detections():
        if redis_client.exists(key):
            redis_client.xgroup_setid(key, GROUP, "0")
    with running(settings) as service:
        wait_until(
            lambda: metric(service, "facemask_alerts_detections_consumed_total") == 2,
            10,
            "entries processed again",
        )
        assert metric(service, "facemask_alerts_replayed_total") == 0
        base = f"http://127.0.0.1:{service.port}"
        (again,) = httpx.get(f"{base}/api/alerts", headers=AUTH).json()["alerts"]
        assert again["id"] == alert["id"] and again["seq"] == alert["seq"]
        assert again["review"] == review
        reviewed = httpx.get(f"{base}/api/alerts?state=reviewed", headers=AUTH).json()
        assert [a["id"] for a in reviewed["alerts"]] == [alert["id"]]
