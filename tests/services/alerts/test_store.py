"""The SQLite store: batches are atomic and idempotent, pagination, outbox bookkeeping,
schema migrations (a database of the first release opens with its data)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import services.alerts.store as store_module
from services.alerts.store import (
    DELIVERED,
    EXPIRED,
    MIGRATIONS,
    PENDING,
    SCHEMA_VERSION,
    AlertRecord,
    AlertStore,
    CursorError,
    Migration,
    SchemaError,
    decode_cursor,
    encode_cursor,
    parse_sid,
)
from tests.services.alerts.conftest import faces_of


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
        detections=faces_of([("no_mask", 0.9, (1, 2, 30, 40))], 640, 480),
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


# -- schema versions and migrations -----------------------------------------------------

# The schema of the first release, as its store.py created it (user_version stayed 0).
RELEASE_1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    ts REAL NOT NULL,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    frame_id INTEGER NOT NULL,
    frame_sid TEXT NOT NULL,
    stream TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    score REAL NOT NULL,
    box TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    detections TEXT NOT NULL,
    camera_name TEXT NOT NULL DEFAULT '',
    place TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    snapshot TEXT,
    thumbnail TEXT,
    rule TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts, seq);
CREATE INDEX IF NOT EXISTS alerts_camera_ts ON alerts (camera_id, ts, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    done_at REAL,
    UNIQUE (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, status, next_attempt);
CREATE TABLE IF NOT EXISTS camera_state (
    camera_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (stream TEXT PRIMARY KEY, last_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS camera_info (
    camera_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    updated REAL NOT NULL
);
INSERT INTO meta VALUES ('schema', '1');
"""

RULE = {"k": 5, "n": 8, "min_score": 0.6, "min_face": 24, "cooldown": 30.0}


def release_1_database(directory: Path) -> list[AlertRecord]:
    """A database written by the first release: three alerts (one with pictures), their
    outbox rows in every state, an outbox row left behind by a pruned alert, engine
    state, offsets and camera names. Returns the alerts as the release stored them."""
    alerts = [
        replace(
            record("a" * 32, "lobby", 1000.0),
            seq=1,
            camera_name="Lobby",
            place="Main hall",
            message="Person without a mask at Lobby (Main hall)",
            snapshot="2024/01/01/aaaa.jpg",
            thumbnail="2024/01/01/aaaa-thumb.jpg",
            rule=RULE,
        ),
        replace(record("b" * 32, "door", 1001.5), seq=2, score=0.123456, rule=RULE),
        replace(record("c" * 32, "lobby", 1002.25), seq=3, rule=RULE),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / "alerts.sqlite3")
    db.executescript(RELEASE_1_SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")
    for a in alerts:
        db.execute(
            "INSERT INTO alerts (seq, id, camera_id, ts, created, kind, frame_id, frame_sid,"
            " stream, track_id, score, box, width, height, detections, camera_name, place,"
            " message, snapshot, thumbnail, rule) VALUES"
            " (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a.alert_id,
                a.camera_id,
                a.ts,
                a.created,
                a.kind,
                a.frame_id,
                a.frame_sid,
                a.stream,
                a.track_id,
                a.score,
                json.dumps(list(a.box)),
                a.width,
                a.height,
                json.dumps(a.to_json()["detections"], separators=(",", ":")),
                a.camera_name,
                a.place,
                a.message,
                a.snapshot,
                a.thumbnail,
                json.dumps(a.rule),
            ),
        )
    rows = [  # alert, sink, created, next_attempt, attempts, status, last_error, done_at
        ("a" * 32, "redis", 1000.2, 1000.2, 1, "delivered", "", 1000.3),
        ("a" * 32, "webhook", 1000.2, 1400.0, 3, "pending", "HTTP 503", None),
        ("b" * 32, "webhook", 1001.6, 1001.6, 1, "failed", "HTTP 400", 1001.7),
        ("c" * 32, "webhook", 1002.3, 1002.3, 0, "pending", "", None),
        ("f" * 32, "webhook", 10.0, 10.0, 2, "pending", "HTTP 503", None),  # alert pruned
    ]
    by_id = {a.alert_id: a for a in alerts}
    for alert_id, sink, created, next_attempt, attempts, status, error, done in rows:
        alert = by_id.get(alert_id, alerts[0])
        payload = json.dumps(alert.to_json(), separators=(",", ":"))
        db.execute(
            "INSERT INTO outbox (alert_id, sink, payload, created, next_attempt, attempts,"
            " status, last_error, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (alert_id, sink, payload, created, next_attempt, attempts, status, error, done),
        )
    db.execute(
        "INSERT INTO camera_state VALUES ('lobby', ?, 1002.0)",
        (json.dumps({"camera_id": "lobby", "frames": 12}),),
    )
    db.execute("INSERT INTO offsets VALUES ('facemask:{p0}:detections', '1700000000000-7')")
    db.execute(
        "INSERT INTO camera_info VALUES ('lobby', ?, 1002.0)",
        (json.dumps({"id": "lobby", "name": "Lobby"}),),
    )
    db.commit()
    db.close()
    return alerts


def columns(path: Path) -> dict[str, list[tuple[str, str, int, Any, int]]]:
    """Every table's columns (name, type, not null, default, pk) and index names."""
    db = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {t: [tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version >= 2
    assert all(m.summary and m.statements for m in MIGRATIONS)


def test_a_database_of_the_first_release_opens_migrated_with_its_data(tmp_path: Path) -> None:
    old = release_1_database(tmp_path)
    store = AlertStore(tmp_path)
    assert store.migrated_from == 0 and store.schema_version() == SCHEMA_VERSION
    # Every alert reads back as the release stored it.
    assert [store.get_alert(a.alert_id) for a in old] == old
    page, _ = store.list_alerts(limit=10)
    assert page == old[::-1]
    # Deliveries keep their state and now carry their alert, read from the alerts table.
    rows = {(d.alert_id, d.sink): d for a in old for d in store.deliveries(a.alert_id)}
    assert {k: (d.status, d.attempts, d.last_error, d.done_at) for k, d in rows.items()} == {
        ("a" * 32, "redis"): ("delivered", 1, "", 1000.3),
        ("a" * 32, "webhook"): ("pending", 3, "HTTP 503", None),
        ("b" * 32, "webhook"): ("failed", 1, "HTTP 400", 1001.7),
        ("c" * 32, "webhook"): ("pending", 0, "", None),
    }
    assert all(d.alert == store.get_alert(d.alert_id) for d in rows.values())
    # The JSON the sinks send is the one the release had stored as payload.
    old_db = release_1_database(tmp_path / "copy")
    payloads = sqlite3.connect(tmp_path / "copy" / "alerts.sqlite3").execute(
        "SELECT alert_id, sink, payload FROM outbox WHERE alert_id != ?", ("f" * 32,)
    )
    for alert_id, sink, payload in payloads:
        assert rows[(alert_id, sink)].alert.to_json() == json.loads(payload), (alert_id, sink)
    assert old_db == old
    # The pruned alert's leftover row is gone; the due ones are due as before.
    assert store.outbox_depth() == {"webhook": 2}
    assert [d.alert_id for d in store.due("webhook", 1003.0)] == ["c" * 32]
    assert store.next_due("webhook") == 1002.3
    # Engine state, offsets and camera names are untouched.
    assert store.load_state() == (
        [{"camera_id": "lobby", "frames": 12}],
        {"facemask:{p0}:detections": "1700000000000-7"},
    )
    assert store.camera_info() == {"lobby": {"id": "lobby", "name": "Lobby"}}
    # New rows continue the sequences (no reused alert seq or outbox id).
    (new,) = store.commit_batch([record("d" * 32, ts=2000.0)], ["webhook"], {}, {})
    assert new.seq == 4
    (delivery,) = store.deliveries("d" * 32)
    assert delivery.row_id > 5
    store.close()
    # Same tables, columns and indexes as a database created by this build.
    AlertStore(tmp_path / "fresh").close()
    assert columns(tmp_path / "alerts.sqlite3") == columns(tmp_path / "fresh" / "alerts.sqlite3")
    meta = sqlite3.connect(tmp_path / "alerts.sqlite3").execute("SELECT value FROM meta")
    assert meta.fetchall() == [(str(SCHEMA_VERSION),)]  # older builds refuse this file


@pytest.mark.parametrize("version", range(len(MIGRATIONS) + 1))
def test_every_schema_version_migrates_to_the_latest(tmp_path: Path, version: int) -> None:
    """A database left at any version (by applying the first ``version`` migrations)
    opens, reaches the latest version once, and reopens without change."""
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    for migration in MIGRATIONS[:version]:
        for statement in migration.statements:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    first = AlertStore(tmp_path)
    assert first.migrated_from == version and first.schema_version() == SCHEMA_VERSION
    first.commit_batch([record("e" * 32)], ["redis"], {}, {})
    first.close()
    again = AlertStore(tmp_path)
    assert again.migrated_from == SCHEMA_VERSION
    assert again.get_alert("e" * 32) is not None and again.outbox_depth() == {"redis": 1}
    again.close()
    AlertStore(tmp_path / "fresh").close()
    assert columns(tmp_path / "alerts.sqlite3") == columns(tmp_path / "fresh" / "alerts.sqlite3")


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    AlertStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
        AlertStore(tmp_path)
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_1_database(tmp_path)
    before = columns(tmp_path / "alerts.sqlite3")
    broken = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "broken", ("CREATE TABLE alerts (x)",)))
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        AlertStore(tmp_path)
    # Not even the migrations before the broken one were kept: all or nothing.
    assert columns(tmp_path / "alerts.sqlite3") == before
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0


def test_rows_are_read_by_column_name(tmp_path: Path) -> None:
    """A table whose columns are in another order (as a rebuild may leave it) reads the
    same: nothing depends on column positions."""
    store = AlertStore(tmp_path)
    (alert,) = store.commit_batch(
        [replace(record("a" * 32), snapshot="x.jpg", rule=RULE)], ["redis"], {}, {}
    )
    store.close()
    db = sqlite3.connect(tmp_path / "alerts.sqlite3")
    names = [r[1] for r in db.execute("PRAGMA table_info(alerts)")]
    shuffled = ", ".join(reversed(names))
    db.executescript(
        f"""
        CREATE TABLE alerts_reversed AS SELECT {shuffled} FROM alerts;
        DROP TABLE alerts;
        ALTER TABLE alerts_reversed RENAME TO alerts;
        """
    )
    assert db.execute("PRAGMA table_info(alerts)").fetchone()[1] == names[-1]
    db.close()
    reopened = AlertStore(tmp_path)
    assert reopened.get_alert("a" * 32) == alert
    assert reopened.due("redis", time.time() + 1)[0].alert == alert


def test_an_alert_keeps_the_violators_it_names(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    group = replace(record("a" * 32), violators=3, track_ids=(1, 4, 2))
    (stored,) = store.commit_batch([group, record("b" * 32, ts=1001.0)], ["redis"], {}, {})[:1]
    store.close()
    reopened = AlertStore(tmp_path)
    again = reopened.get_alert("a" * 32)
    assert again == stored and (again.violators, again.track_ids) == (3, (1, 4, 2))
    assert (again.to_json()["violators"], again.to_json()["track_ids"]) == (3, [1, 4, 2])
    single = reopened.get_alert("b" * 32)
    assert single is not None and (single.violators, single.to_json()["track_ids"]) == (1, [1])
    reopened.close()
