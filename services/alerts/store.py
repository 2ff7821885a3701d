"""Durable state of the alert service: one SQLite database (WAL) in ``state_dir``.

Why SQLite and not Redis: the state must survive a restart of the service *and* of Redis
(whose streams are trimmed and may run without persistence), and the unit of durability
is "this batch of detections entries, its alerts, their deliveries, the trackers' state
and the stream position" - one local transaction (``synchronous=FULL``), no network round
trip, readable with the ``sqlite3`` shell. Tables::

    alerts        one row per alert (seq: insertion order, id: deterministic uuid)
    outbox        one row per (alert, sink): pending / delivered / failed / expired
    camera_state  serialised engine state per camera (tracker, cooldown, recent frames)
    offsets       last detections entry id processed per stream
    camera_info   last registry fields seen per camera (names of offline cameras)
    meta          schema version

The consumer commits a batch with :meth:`AlertStore.commit_batch` and only then
acknowledges the entries; an entry whose id is at or below the stored offset of its
stream was already processed and is acknowledged without being processed again. Each
thread gets its own connection; writers serialise on SQLite's lock (``busy_timeout``).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DB_NAME = "alerts.sqlite3"

SCHEMA = """
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
"""

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"


class CursorError(ValueError):
    """A pagination cursor that this service did not produce."""


def parse_sid(sid: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)`` (stream ids compare as tuples)."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored alert."""

    alert_id: str
    camera_id: str
    ts: float
    created: float
    kind: str
    frame_id: int
    frame_sid: str
    stream: str
    track_id: int
    score: float
    box: tuple[int, int, int, int]
    width: int
    height: int
    detections: list[dict[str, Any]]
    camera_name: str = ""
    place: str = ""
    message: str = ""
    snapshot: str | None = None
    thumbnail: str | None = None
    rule: dict[str, Any] | None = None
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """The alert as the API and the sinks show it (no file paths)."""
        return {
            "id": self.alert_id,
            "seq": self.seq,
            "camera_id": self.camera_id,
            "camera_name": self.camera_name or self.camera_id,
            "place": self.place,
            "ts": self.ts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.ts))
            + f".{int((self.ts % 1) * 1000):03d}Z",
            "kind": self.kind,
            "message": self.message,
            "frame_id": self.frame_id,
            "frame_sid": self.frame_sid,
            "track_id": self.track_id,
            "score": round(self.score, 4),
            "box": list(self.box),
            "width": self.width,
            "height": self.height,
            "detections": self.detections,
            "has_snapshot": self.snapshot is not None,
            "rule": self.rule or {},
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row."""

    row_id: int
    alert_id: str
    sink: str
    payload: dict[str, Any]
    created: float
    next_attempt: float
    attempts: int
    status: str
    last_error: str
    done_at: float | None


_ALERT_COLUMNS = (
    "seq, id, camera_id, ts, created, kind, frame_id, frame_sid, stream, track_id, score, box,"
    " width, height, detections, camera_name, place, message, snapshot, thumbnail, rule"
)


def _alert_from_row(row: Sequence[Any]) -> AlertRecord:
    box = json.loads(row[11])
    return AlertRecord(
        seq=int(row[0]),
        alert_id=row[1],
        camera_id=row[2],
        ts=float(row[3]),
        created=float(row[4]),
        kind=row[5],
        frame_id=int(row[6]),
        frame_sid=row[7],
        stream=row[8],
        track_id=int(row[9]),
        score=float(row[10]),
        box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        width=int(row[12]),
        height=int(row[13]),
        detections=json.loads(row[14]),
        camera_name=row[15],
        place=row[16],
        message=row[17],
        snapshot=row[18],
        thumbnail=row[19],
        rule=json.loads(row[20]),
    )


def encode_cursor(ts: float, seq: int) -> str:
    """Opaque pagination cursor: the position after the last alert of a page."""
    return base64.urlsafe_b64encode(f"{ts!r}|{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Inverse of :func:`encode_cursor`; raises :class:`CursorError`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, seq = raw.split("|")
        return float(ts), int(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CursorError(f"invalid cursor {cursor[:40]!r}: use next_cursor of a page") from exc


class AlertStore:
    """The SQLite database; safe to use from several threads."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema {row[0]}, newer than this build ({SCHEMA_VERSION})"
            )

    # -- connections -----------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on any exception)."""
        conn = self._conn()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._conn_lock:
            for conn in self._connections:
                with suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- consumer state --------------------------------------------------------------

    def load_state(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Every camera's stored engine state and every stream's last processed id."""
        conn = self._conn()
        cameras = [json.loads(r[0]) for r in conn.execute("SELECT state FROM camera_state")]
        offsets = dict(conn.execute("SELECT stream, last_id FROM offsets").fetchall())
        return cameras, offsets

    def commit_batch(
        self,
        alerts: Sequence[AlertRecord],
        sinks: Sequence[str],
        camera_states: Mapping[str, Mapping[str, Any]],
        offsets: Mapping[str, str],
        *,
        now: float | None = None,
    ) -> list[AlertRecord]:
        """Store a batch's alerts (one outbox row per sink each), camera states and stream
        offsets in one transaction. Returns the alerts as stored (with ``seq``); an alert
        whose id is already stored is not stored again (nor delivered again)."""
        now = time.time() if now is None else now
        stored: list[AlertRecord] = []
        with self.transaction() as cur:
            for alert in alerts:
                cur.execute(
                    f"INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS}) VALUES "
                    "(NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.alert_id,
                        alert.camera_id,
                        alert.ts,
                        alert.created,
                        alert.kind,
                        alert.frame_id,
                        alert.frame_sid,
                        alert.stream,
                        alert.track_id,
                        alert.score,
                        json.dumps(list(alert.box)),
                        alert.width,
                        alert.height,
                        json.dumps(alert.detections, separators=(",", ":")),
                        alert.camera_name,
                        alert.place,
                        alert.message,
                        alert.snapshot,
                        alert.thumbnail,
                        json.dumps(alert.rule or {}),
                    ),
                )
                if cur.rowcount == 0:
                    continue
                seq = int(cur.lastrowid or 0)
                record = replace(alert, seq=seq)
                payload = json.dumps(record.to_json(), separators=(",", ":"))
                for sink in sinks:
                    cur.execute(
                        "INSERT OR IGNORE INTO outbox (alert_id, sink, payload, created,"
                        " next_attempt) VALUES (?, ?, ?, ?, ?)",
                        (alert.alert_id, sink, payload, now, now),
                    )
                stored.append(record)
            for camera_id, state in camera_states.items():
                cur.execute(
                    "INSERT INTO camera_state (camera_id, state, updated) VALUES (?, ?, ?)"
                    " ON CONFLICT (camera_id) DO UPDATE SET state=excluded.state,"
                    " updated=excluded.updated",
                    (camera_id, json.dumps(state, separators=(",", ":")), now),
                )
            for stream, last_id in offsets.items():
                cur.execute(
                    "INSERT INTO offsets (stream, last_id) VALUES (?, ?)"
                    " ON CONFLICT (stream) DO UPDATE SET last_id=excluded.last_id",
                    (stream, last_id),
                )
        return stored

    # -- camera names ----------------------------------------------------------------

    def save_camera_info(self, cameras: Mapping[str, Mapping[str, str]]) -> None:
        """Remember the registry fields of cameras (their hash expires when offline)."""
        if not cameras:
            return
        with self.transaction() as cur:
            for camera_id, info in cameras.items():
                cur.execute(
                    "INSERT INTO camera_info (camera_id, info, updated) VALUES (?, ?, ?)"
                    " ON CONFLICT (camera_id) DO UPDATE SET info=excluded.info,"
                    " updated=excluded.updated",
                    (camera_id, json.dumps(dict(info), sort_keys=True), time.time()),
                )

    def camera_info(self) -> dict[str, dict[str, str]]:
        """Last registry fields seen of every camera."""
        rows = self._conn().execute("SELECT camera_id, info FROM camera_info")
        return {r[0]: json.loads(r[1]) for r in rows}

    # -- alerts ----------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        """One alert by id."""
        row = (
            self._conn()
            .execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id=?", (alert_id,))
            .fetchone()
        )
        return _alert_from_row(row) if row else None

    def list_alerts(
        self,
        *,
        camera_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[AlertRecord], str | None]:
        """Alerts newest first (capture time) with an opaque cursor to the next page."""
        where: list[str] = []
        args: list[Any] = []
        if camera_id is not None:
            where.append("camera_id = ?")
            args.append(camera_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts < ?")
            args.append(until)
        if cursor:
            ts, seq = decode_cursor(cursor)
            where.append("(ts < ? OR (ts = ? AND seq < ?))")
            args.extend([ts, ts, seq])
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, seq DESC LIMIT ?"
        args.append(limit + 1)
        rows = self._conn().execute(sql, args).fetchall()
        alerts = [_alert_from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and alerts:
            next_cursor = encode_cursor(alerts[-1].ts, alerts[-1].seq)
        return alerts, next_cursor

    def alerts_after(self, seq: int, limit: int = 100) -> list[AlertRecord]:
        """Alerts stored after ``seq`` (oldest first): SSE resume with Last-Event-ID."""
        rows = (
            self._conn()
            .execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            .fetchall()
        )
        return [_alert_from_row(r) for r in rows]

    def count_alerts(self, since: float | None = None) -> dict[str, int]:
        """Alerts per camera (since ``since``)."""
        sql = "SELECT camera_id, COUNT(*) FROM alerts"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            args.append(since)
        sql += " GROUP BY camera_id"
        return {r[0]: int(r[1]) for r in self._conn().execute(sql, args)}

    def prune_alerts(self, before: float) -> list[AlertRecord]:
        """Delete alerts captured before ``before`` and their delivery rows."""
        with self.transaction() as cur:
            rows = cur.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE ts < ?", (before,)
            ).fetchall()
            cur.execute("DELETE FROM alerts WHERE ts < ?", (before,))
            cur.execute(
                "DELETE FROM outbox WHERE status != ? AND alert_id NOT IN (SELECT id FROM alerts)",
                (PENDING,),
            )
        return [_alert_from_row(r) for r in rows]

    # -- outbox ----------------------------------------------------------------------

    def due(self, sink: str, now: float, limit: int = 20) -> list[Delivery]:
        """Pending deliveries of ``sink`` whose next attempt is due, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, alert_id, sink, payload, created, next_attempt, attempts, status,"
                " last_error, done_at FROM outbox WHERE sink=? AND status=? AND next_attempt<=?"
                " ORDER BY id LIMIT ?",
                (sink, PENDING, now, limit),
            )
            .fetchall()
        )
        return [_delivery(r) for r in rows]

    def next_due(self, sink: str) -> float | None:
        """When the next pending delivery of ``sink`` is due (None: nothing pending)."""
        row = (
            self._conn()
            .execute(
                "SELECT MIN(next_attempt) FROM outbox WHERE sink=? AND status=?", (sink, PENDING)
            )
            .fetchone()
        )
        return float(row[0]) if row and row[0] is not None else None

    def mark_delivered(self, row_id: int, now: float) -> None:
        """A delivery succeeded."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE outbox SET status=?, attempts=attempts+1, done_at=?, last_error=''"
                " WHERE id=?",
                (DELIVERED, now, row_id),
            )

    def mark_retry(self, row_id: int, next_attempt: float, error: str) -> None:
        """A delivery failed and will be tried again at ``next_attempt``."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt=?, last_error=? WHERE id=?",
                (next_attempt, error[:500], row_id),
            )

    def mark_final(
        self, row_id: int, status: str, error: str, now: float, *, attempt: bool
    ) -> None:
        """A delivery gave up: ``failed`` (rejected by the receiver) or ``expired``."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE outbox SET status=?, attempts=attempts+?, last_error=?, done_at=?"
                " WHERE id=?",
                (status, 1 if attempt else 0, error[:500], now, row_id),
            )

    def deliveries(self, alert_id: str) -> list[Delivery]:
        """Every delivery row of an alert."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, alert_id, sink, payload, created, next_attempt, attempts, status,"
                " last_error, done_at FROM outbox WHERE alert_id=? ORDER BY sink",
                (alert_id,),
            )
            .fetchall()
        )
        return [_delivery(r) for r in rows]

    def outbox_depth(self) -> dict[str, int]:
        """Pending deliveries per sink."""
        rows = self._conn().execute(
            "SELECT sink, COUNT(*) FROM outbox WHERE status=? GROUP BY sink", (PENDING,)
        )
        return {r[0]: int(r[1]) for r in rows}


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        row_id=int(row[0]),
        alert_id=row[1],
        sink=row[2],
        payload=json.loads(row[3]),
        created=float(row[4]),
        next_attempt=float(row[5]),
        attempts=int(row[6]),
        status=row[7],
        last_error=row[8],
        done_at=row[9],
    )
