"""The SQLite store: batches are atomic and idempotent, pagination, outbox bookkeeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.alerts.store import (
    DELIVERED,
    EXPIRED,
    PENDING,
    AlertRecord,
    AlertStore,
    CursorError,
    decode_cursor,
    encode_cursor,
    parse_sid,
)


def record(alert_id: str, camera: str = "lobby", ts: float = 1000.0) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        camera_id=camera,
        ts=ts,
        created=ts + 0.1,
        kind="no_mask",
        frame_id=int(ts * 1000),
        frame_sid=f"{int(ts * 1000)}-0",
        stream="facemask:{p0}:detections",
        track_id=1,
        score=0.9,
        box=(1, 2, 30, 40),
        width=640,
        height=480,
        detections=[{"label": "no_mask", "score": 0.9, "box": [1, 2, 30, 40]}],
    )


def test_commit_batch_is_atomic_and_idempotent(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    stored = store.commit_batch(
        [record("a" * 32)], ["webhook", "redis"], {"lobby": {"camera_id": "lobby"}}, {"s": "5-0"}
    )
    assert [r.seq for r in stored] == [1]
    # The same alert again (a batch redone after a crash before XACK): nothing new.
    again = store.commit_batch([record("a" * 32)], ["webhook", "redis"], {}, {"s": "6-0"})
    assert again == []
    assert store.outbox_depth() == {"webhook": 1, "redis": 1}
    cameras, offsets = store.load_state()
    assert cameras == [{"camera_id": "lobby"}] and offsets == {"s": "6-0"}

    class Boom(Exception):
        pass

    # A failure inside the transaction leaves nothing behind.
    with pytest.raises(Boom), store.transaction() as cur:
        cur.execute("INSERT INTO offsets VALUES ('t', '1-0')")
        raise Boom
    assert store.load_state()[1] == {"s": "6-0"}
    store.close()
    # Durable: a new process (new store object) sees it all; WAL mode is on.
    reopened = AlertStore(tmp_path)
    assert reopened.get_alert("a" * 32) is not None
    mode = sqlite3.connect(tmp_path / "alerts.sqlite3").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_list_alerts_pages_and_filters(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    alerts = [record(f"{i:032x}", "lobby" if i % 2 else "door", 1000.0 + i) for i in range(25)]
    # Two alerts with the same capture time keep a stable order (by seq).
    alerts.append(record("f" * 32, "door", 1010.0))
    store.commit_batch(alerts, [], {}, {})
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_alerts(limit=7, cursor=cursor)
        seen.extend(a.alert_id for a in page)
        if cursor is None:
            break
    assert len(seen) == 26 and len(set(seen)) == 26
    ts = [store.get_alert(i).ts for i in seen]  # type: ignore[union-attr]
    assert ts == sorted(ts, reverse=True)
    lobby, _ = store.list_alerts(camera_id="lobby", since=1005.0, until=1011.0, limit=100)
    assert [a.ts for a in lobby] == [1009.0, 1007.0, 1005.0]
    with pytest.raises(CursorError):
        store.list_alerts(cursor="not-a-cursor")
    assert decode_cursor(encode_cursor(12.5, 3)) == (12.5, 3)


def test_outbox_rows(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.commit_batch([record("b" * 32)], ["webhook"], {}, {}, now=100.0)
    (row,) = store.due("webhook", 100.0)
    assert row.status == PENDING and row.alert.alert_id == "b" * 32
    store.mark_retry(row.row_id, 110.0, "HTTP 503")
    assert store.due("webhook", 105.0) == []
    assert store.next_due("webhook") == 110.0
    (row,) = store.due("webhook", 110.0)
    assert row.attempts == 1 and row.last_error == "HTTP 503"
    store.mark_delivered(row.row_id, 111.0)
    assert store.outbox_depth() == {}
    assert [d.status for d in store.deliveries("b" * 32)] == [DELIVERED]
    store.commit_batch([record("c" * 32)], ["webhook"], {}, {}, now=100.0)
    (row,) = store.due("webhook", 200.0)
    store.mark_final(row.row_id, EXPIRED, "ttl", 300.0, attempt=False)
    assert store.deliveries("c" * 32)[0].status == EXPIRED


def test_prune_alerts(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.commit_batch([record("d" * 32, ts=10.0), record("e" * 32, ts=100.0)], ["redis"], {}, {})
    pruned = store.prune_alerts(50.0)
    assert [a.alert_id for a in pruned] == ["d" * 32]
    assert store.get_alert("d" * 32) is None and store.get_alert("e" * 32) is not None


def test_parse_sid_orders_like_redis() -> None:
    assert parse_sid("1700000000000-10") > parse_sid("1700000000000-9")
    assert parse_sid("1700000000001-0") > parse_sid("1700000000000-99")
