"""Durable state of the alert service: one SQLite database (WAL) in ``state_dir``.

Why SQLite and not Redis: the state must survive a restart of the service *and* of Redis
(whose streams are trimmed and may run without persistence), and the unit of durability
is "this batch of detections entries, its alerts, their deliveries, the trackers' state
and the stream position" - one local transaction (``synchronous=FULL``), no network round
trip, readable with the ``sqlite3`` shell. Tables::

    alerts        one row per alert (seq: insertion order, id: deterministic uuid) and its
                  review (state, by, at, note, label), set by the API only
    outbox        one row per (alert, sink): pending / delivered / failed / expired
    camera_state  serialised engine state per camera (tracker, cooldown, recent frames)
    offsets       last detections entry id processed per stream
    camera_info   last registry fields seen per camera (names of offline cameras)
    camera_zones  zones set through the API per camera (they replace the configured ones)
    meta          the schema version for builds that predate ``PRAGMA user_version``

Schema: ``PRAGMA user_version`` is the number of :data:`MIGRATIONS` applied. Opening a
database applies the missing ones in order, in one transaction (a database of a newer
build is refused), so a database of any earlier release opens and is brought up to date.

The consumer commits a batch with :meth:`AlertStore.commit_batch` and only then
acknowledges the entries; an alert already stored (a batch processed again) is left as it
is, its review included. An entry whose id is at or below the stored offset of its
stream was already processed and is acknowledged without being processed again. An
outbox row refers to its alert; the outbox workers read the alert from ``alerts`` (one
record from the consumer to every sink). Each thread gets its own connection; writers
serialise on SQLite's lock (``busy_timeout``). Rows are read by column name.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from facemask.contracts.wire import WireError, parse_detections
from facemask.core.types import Detections
from facemask.infra.consumer import stream_id
from services.alerts.records import REVIEW_LABELS, REVIEWED, AlertRecord, Review, ReviewState

logger = logging.getLogger(__name__)

__all__ = [
    "DELIVERED",
    "EXPIRED",
    "FAILED",
    "MIGRATIONS",
    "PENDING",
    "SCHEMA_VERSION",
    "AlertRecord",
    "AlertStore",
    "CursorError",
    "Delivery",
    "Migration",
    "SchemaError",
    "decode_cursor",
    "encode_cursor",
    "parse_sid",
]

DB_NAME = "alerts.sqlite3"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``statements`` take a database from ``version - 1`` to
    ``version``."""

    version: int
    summary: str
    statements: tuple[str, ...]


_REVIEWED_TERM = "review_state IN ({})".format(", ".join(f"'{s}'" for s in REVIEWED))
"""``?state=reviewed`` (:data:`~services.alerts.records.REVIEWED`); SQLite uses a partial
index only for a query that holds its WHERE term exactly, so both are this string."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the tables of the first release (its databases have them, with user_version 0)",
        (
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS alerts (
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
            )""",
            "CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts, seq)",
            "CREATE INDEX IF NOT EXISTS alerts_camera_ts ON alerts (camera_id, ts, seq)",
            """CREATE TABLE IF NOT EXISTS outbox (
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
            )""",
            "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, status, next_attempt)",
            """CREATE TABLE IF NOT EXISTS camera_state (
                camera_id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                updated REAL NOT NULL
            )""",
            "CREATE TABLE IF NOT EXISTS offsets (stream TEXT PRIMARY KEY, last_id TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS camera_info (
                camera_id TEXT PRIMARY KEY,
                info TEXT NOT NULL,
                updated REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "outbox rows refer to their alert instead of carrying a copy of it (payload "
        "column dropped; rows of alerts no longer in the history are dropped)",
        (
            # The table is rebuilt (SQLite's documented way to drop a column, any version).
            """CREATE TABLE outbox_v2 (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                alert_id TEXT NOT NULL,
                sink TEXT NOT NULL,
                created REAL NOT NULL,
                next_attempt REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                status TEXT NOT NULL DEFAULT 'pending',
                last_error TEXT NOT NULL DEFAULT '',
                done_at REAL,
                UNIQUE (alert_id, sink)
            )""",
            """INSERT INTO outbox_v2 (id, alert_id, sink, created, next_attempt, attempts,
                status, last_error, done_at)
            SELECT id, alert_id, sink, created, next_attempt, attempts, status, last_error,
                done_at FROM outbox WHERE alert_id IN (SELECT id FROM alerts) ORDER BY id""",
            # Row ids continue after the old table's, even if its last rows were dropped.
            """UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence
                WHERE name = 'outbox') WHERE name = 'outbox_v2'""",
            """INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v2', seq
                FROM sqlite_sequence WHERE name = 'outbox'
                AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v2')""",
            "DROP TABLE outbox",
            "ALTER TABLE outbox_v2 RENAME TO outbox",
            "CREATE INDEX outbox_due ON outbox (sink, status, next_attempt)",
        ),
    ),
    # --- review (issue 14) ---
    Migration(
        3,
        "alerts are reviewed (state, by, at, note, label) and keep their clean frame; "
        "pages filtered by review state stay on an index",
        (
            "ALTER TABLE alerts ADD COLUMN review_state TEXT NOT NULL DEFAULT 'new'",
            "ALTER TABLE alerts ADD COLUMN review_by TEXT",
            "ALTER TABLE alerts ADD COLUMN review_at REAL",
            "ALTER TABLE alerts ADD COLUMN review_note TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN review_label TEXT",
            "ALTER TABLE alerts ADD COLUMN frame TEXT",
            "CREATE INDEX alerts_state_ts ON alerts (review_state, ts, seq)",
            "CREATE INDEX alerts_camera_state_ts ON alerts (camera_id, review_state, ts, seq)",
            # ?state=reviewed: partial indexes whose WHERE is the query's term, word for word
            f"CREATE INDEX alerts_reviewed_ts ON alerts (ts, seq) WHERE {_REVIEWED_TERM}",
            f"CREATE INDEX alerts_camera_reviewed_ts ON alerts (camera_id, ts, seq)"
            f" WHERE {_REVIEWED_TERM}",
        ),
    ),
    # --- end review ---
    # --- grouping and zones (engine) ---
    Migration(
        4,
        "alerts name their violators (violators, track_ids: a merged group names several); "
        "zones set through the API are kept per camera",
        (
            "ALTER TABLE alerts ADD COLUMN violators INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE alerts ADD COLUMN track_ids TEXT NOT NULL DEFAULT '[]'",
            """CREATE TABLE camera_zones (
                camera_id TEXT PRIMARY KEY,
                zones TEXT NOT NULL,
                updated REAL NOT NULL
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"


class SchemaError(RuntimeError):
    """The database was written by a newer build (its schema is unknown here)."""


class CursorError(ValueError):
    """A pagination cursor that this service did not produce."""


parse_sid = stream_id
"""``"1700000000000-3"`` -> ``(1700000000000, 3)`` (stream ids compare as tuples)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row and the alert it delivers."""

    row_id: int
    sink: str
    created: float
    next_attempt: float
    attempts: int
    status: str
    last_error: str
    done_at: float | None
    alert: AlertRecord

    @property
    def alert_id(self) -> str:
        """The id of the alert delivered."""
        return self.alert.alert_id


_ALERT_COLUMNS = (
    "a.seq, a.id, a.camera_id, a.ts, a.created, a.kind, a.frame_id, a.frame_sid, a.stream,"
    " a.track_id, a.score, a.box, a.width, a.height, a.detections, a.camera_name, a.place,"
    " a.message, a.snapshot, a.thumbnail, a.rule, a.violators, a.track_ids"
    # --- review (issue 14) ---
    ", a.frame, a.review_state, a.review_by, a.review_at, a.review_note, a.review_label"
    # --- end review ---
)
# An alert already stored (a batch redone) is left as it is: its review is kept.
_INSERT_ALERT = (
    "INSERT OR IGNORE INTO alerts (id, camera_id, ts, created, kind, frame_id, frame_sid,"
    " stream, track_id, score, box, width, height, detections, camera_name, place, message,"
    " snapshot, thumbnail, rule, violators, track_ids, frame) VALUES (:id, :camera_id, :ts,"
    " :created, :kind, :frame_id, :frame_sid, :stream, :track_id, :score, :box, :width,"
    " :height, :detections, :camera_name, :place, :message, :snapshot, :thumbnail, :rule,"
    " :violators, :track_ids, :frame)"
)
# An outbox row with its alert; outbox columns renamed where alerts has the same name.
_DELIVERY_SELECT = (
    "SELECT o.id AS row_id, o.sink, o.created AS queued, o.next_attempt, o.attempts,"
    f" o.status, o.last_error, o.done_at, {_ALERT_COLUMNS}"
    " FROM outbox o JOIN alerts a ON a.id = o.alert_id"
)


def _alert_row(alert: AlertRecord) -> dict[str, Any]:
    return {
        "id": alert.alert_id,
        "camera_id": alert.camera_id,
        "ts": alert.ts,
        "created": alert.created,
        "kind": alert.kind,
        "frame_id": alert.frame_id,
        "frame_sid": alert.frame_sid,
        "stream": alert.stream,
        "track_id": alert.track_id,
        "score": alert.score,
        "box": json.dumps(list(alert.box)),
        "width": alert.width,
        "height": alert.height,
        "detections": json.dumps(
            alert.detections.to_json(alert.width, alert.height, digits=6), separators=(",", ":")
        ),
        "camera_name": alert.camera_name,
        "place": alert.place,
        "message": alert.message,
        "snapshot": alert.snapshot,
        "thumbnail": alert.thumbnail,
        "rule": json.dumps(alert.rule),
        "frame": alert.frame,
        "violators": alert.violators,
        "track_ids": json.dumps(list(alert.track_ids)),
    }


def _detections_from_row(row: sqlite3.Row) -> Detections:
    """The alert's faces, stored in the detections entry's wire form."""
    try:
        return parse_detections(
            json.loads(row["detections"]), int(row["width"]), int(row["height"])
        )
    except (ValueError, WireError) as exc:  # a row written by hand, or damaged: keep the alert
        logger.warning(
            "stored detections unreadable", extra={"alert_id": row["id"], "error": str(exc)}
        )
        return Detections.empty()


def _alert_from_row(row: sqlite3.Row) -> AlertRecord:
    box = json.loads(row["box"])
    return AlertRecord(
        seq=int(row["seq"]),
        alert_id=row["id"],
        camera_id=row["camera_id"],
        ts=float(row["ts"]),
        created=float(row["created"]),
        kind=row["kind"],
        frame_id=int(row["frame_id"]),
        frame_sid=row["frame_sid"],
        stream=row["stream"],
        track_id=int(row["track_id"]),
        score=float(row["score"]),
        box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        width=int(row["width"]),
        height=int(row["height"]),
        detections=_detections_from_row(row),
        camera_name=row["camera_name"],
        place=row["place"],
        message=row["message"],
        snapshot=row["snapshot"],
        thumbnail=row["thumbnail"],
        rule=json.loads(row["rule"]),
        frame=row["frame"],
        review=_review_from_row(row),
        violators=int(row["violators"]),
        track_ids=tuple(int(t) for t in json.loads(row["track_ids"])),
    )


# --- review (issue 14) ---


def _review_from_row(row: sqlite3.Row) -> Review:
    return Review(
        state=row["review_state"],
        by=row["review_by"],
        at=None if row["review_at"] is None else float(row["review_at"]),
        note=row["review_note"],
        label=row["review_label"],
    )


# --- end review ---


def _delivery_from_row(row: sqlite3.Row) -> Delivery:
    return Delivery(
        row_id=int(row["row_id"]),
        sink=row["sink"],
        created=float(row["queued"]),
        next_attempt=float(row["next_attempt"]),
        attempts=int(row["attempts"]),
        status=row["status"],
        last_error=row["last_error"],
        done_at=row["done_at"],
        alert=_alert_from_row(row),
    )


def encode_cursor(ts: float, seq: int) -> str:
    """Opaque pagination cursor: the position after the last alert of a page."""
    return base64.urlsafe_b64encode(f"{ts!r}|{seq}".encode()).decode().rstrip("=")


MAX_SEQ = 2**63 - 1
"""Largest alert seq (SQLite INTEGER); larger ids and cursors are refused."""
MAX_CURSOR_TS = 1e11
"""Latest time a cursor may name (year 5138): a larger one was not made by this service."""


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Inverse of :func:`encode_cursor` (a time 0..``MAX_CURSOR_TS``, a seq 0..``MAX_SEQ``);
    raises :class:`CursorError` for anything this service would not make."""
    problem = f"invalid cursor {cursor[:40]!r}: use next_cursor of a page"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        text_ts, text_seq = raw.split("|")
        ts, seq = float(text_ts), int(text_seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CursorError(problem) from exc
    if not (math.isfinite(ts) and 0 <= ts <= MAX_CURSOR_TS and 0 <= seq <= MAX_SEQ):
        raise CursorError(problem)
    return ts, seq


class AlertStore:
    """The SQLite database; safe to use from several threads."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self.migrated_from = self._migrate(self._conn())

    # -- connections -----------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> int:
        """Apply the missing migrations in one transaction; returns the version found."""
        conn.execute("BEGIN IMMEDIATE")  # another process opening it waits here
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has schema {found}, newer than this build ({SCHEMA_VERSION})"
                )
            for migration in MIGRATIONS:
                if migration.version <= found:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version:d}")
            if found < SCHEMA_VERSION:
                # Builds before user_version read this row and refuse a newer database.
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return found

    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the database."""
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

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
        cameras = [json.loads(r["state"]) for r in conn.execute("SELECT state FROM camera_state")]
        offsets = {
            r["stream"]: r["last_id"] for r in conn.execute("SELECT stream, last_id FROM offsets")
        }
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
                cur.execute(_INSERT_ALERT, _alert_row(alert))
                if cur.rowcount == 0:
                    continue
                stored.append(replace(alert, seq=int(cur.lastrowid or 0)))
                for sink in sinks:
                    cur.execute(
                        "INSERT OR IGNORE INTO outbox (alert_id, sink, created, next_attempt)"
                        " VALUES (?, ?, ?, ?)",
                        (alert.alert_id, sink, now, now),
                    )
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
        return {r["camera_id"]: json.loads(r["info"]) for r in rows}

    # -- camera zones (set through the API) -------------------------------------------

    def save_zones(self, camera_id: str, zones: Mapping[str, Any]) -> None:
        """Keep the zones of a camera (replacing any stored before)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO camera_zones (camera_id, zones, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (camera_id) DO UPDATE SET zones=excluded.zones,"
                " updated=excluded.updated",
                (camera_id, json.dumps(dict(zones), separators=(",", ":")), time.time()),
            )

    def load_zones(self) -> dict[str, dict[str, Any]]:
        """The stored zones of every camera (unreadable rows are logged and left out)."""
        out = {}
        for row in self._conn().execute("SELECT camera_id, zones FROM camera_zones"):
            try:
                out[row["camera_id"]] = dict(json.loads(row["zones"]))
            except (ValueError, TypeError) as exc:
                logger.warning(
                    "stored zones unreadable",
                    extra={"camera_id": row["camera_id"], "error": str(exc)},
                )
        return out

    def delete_zones(self, camera_id: str) -> bool:
        """Forget the stored zones of a camera; True when there were any."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM camera_zones WHERE camera_id=?", (camera_id,))
            return cur.rowcount > 0

    # -- alerts ----------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        """One alert by id."""
        row = (
            self._conn()
            .execute(f"SELECT {_ALERT_COLUMNS} FROM alerts a WHERE a.id=?", (alert_id,))
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
        state: ReviewState | Literal["reviewed"] | None = None,
    ) -> tuple[list[AlertRecord], str | None]:
        """Alerts newest first (capture time) with an opaque cursor to the next page.

        ``state``: only alerts in this review state (``reviewed``: confirmed or false
        positive). Every combination of filters reads one index in order (no sort): camera,
        state, time range and cursor are constraints on ``(camera_id, state, ts, seq)``.
        """
        where: list[str] = []
        args: list[Any] = []
        if camera_id is not None:
            where.append("a.camera_id = ?")
            args.append(camera_id)
        source = "alerts a"
        if state == "reviewed":
            where.append(f"a.{_REVIEWED_TERM}")
            # Without statistics the planner prefers the state index and a sort.
            index = "alerts_camera_reviewed_ts" if camera_id is not None else "alerts_reviewed_ts"
            source = f"alerts a INDEXED BY {index}"
        elif state is not None:
            where.append("a.review_state = ?")
            args.append(state)
        if since is not None:
            where.append("a.ts >= ?")
            args.append(since)
        if until is not None:
            where.append("a.ts < ?")
            args.append(until)
        if cursor:
            ts, seq = decode_cursor(cursor)
            where.append("(a.ts, a.seq) < (?, ?)")  # a row value: a range on the index
            args.extend([ts, seq])
        sql = f"SELECT {_ALERT_COLUMNS} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY a.ts DESC, a.seq DESC LIMIT ?"
        args.append(limit + 1)
        rows = self._conn().execute(sql, args).fetchall()
        alerts = [_alert_from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and alerts:
            next_cursor = encode_cursor(alerts[-1].ts, alerts[-1].seq)
        return alerts, next_cursor

    # --- review (issue 14) ---

    def review(
        self,
        alert_id: str,
        state: ReviewState,
        *,
        by: str,
        at: float,
        note: str = "",
        label: str | None = None,
    ) -> AlertRecord | None:
        """Set an alert's review (who, when, note, the violator's true label); returns the
        alert as stored now, None when unknown. ``label`` must be one of the state's
        (:data:`~services.alerts.records.REVIEW_LABELS`; None: its default)."""
        allowed = REVIEW_LABELS[state]
        if label is None and allowed:
            label = allowed[0]
        if (label is not None or allowed) and label not in allowed:
            raise ValueError(
                f"label {label!r} does not go with state {state!r}"
                + (f" (one of {', '.join(allowed)})" if allowed else " (no label)")
            )
        with self.transaction() as cur:
            cur.execute(
                "UPDATE alerts SET review_state=?, review_by=?, review_at=?, review_note=?,"
                " review_label=? WHERE id=?",
                (state, by, at, note, label, alert_id),
            )
            if cur.rowcount == 0:
                return None
        return self.get_alert(alert_id)

    # --- end review ---

    def alerts_after(self, seq: int, limit: int = 100) -> list[AlertRecord]:
        """Alerts stored after ``seq`` (oldest first): SSE resume with Last-Event-ID."""
        rows = (
            self._conn()
            .execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts a WHERE a.seq > ? ORDER BY a.seq LIMIT ?",
                (seq, limit),
            )
            .fetchall()
        )
        return [_alert_from_row(r) for r in rows]

    def count_alerts(self, since: float | None = None) -> dict[str, int]:
        """Alerts per camera (since ``since``)."""
        sql = "SELECT camera_id, COUNT(*) AS alerts FROM alerts"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            args.append(since)
        sql += " GROUP BY camera_id"
        return {r["camera_id"]: int(r["alerts"]) for r in self._conn().execute(sql, args)}

    def prune_alerts(self, before: float) -> list[AlertRecord]:
        """Delete alerts captured before ``before`` and their delivery rows (a delivery
        still pending then is given up with its alert)."""
        with self.transaction() as cur:
            rows = cur.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts a WHERE a.ts < ?", (before,)
            ).fetchall()
            cur.execute("DELETE FROM alerts WHERE ts < ?", (before,))
            cur.execute("DELETE FROM outbox WHERE alert_id NOT IN (SELECT id FROM alerts)")
        return [_alert_from_row(r) for r in rows]

    # -- outbox ----------------------------------------------------------------------

    def due(self, sink: str, now: float, limit: int = 20) -> list[Delivery]:
        """Pending deliveries of ``sink`` whose next attempt is due, oldest first."""
        rows = (
            self._conn()
            .execute(
                f"{_DELIVERY_SELECT} WHERE o.sink=? AND o.status=? AND o.next_attempt<=?"
                " ORDER BY o.id LIMIT ?",
                (sink, PENDING, now, limit),
            )
            .fetchall()
        )
        return [_delivery_from_row(r) for r in rows]

    def next_due(self, sink: str) -> float | None:
        """When the next pending delivery of ``sink`` is due (None: nothing pending)."""
        row = (
            self._conn()
            .execute(
                "SELECT MIN(next_attempt) AS due FROM outbox WHERE sink=? AND status=?",
                (sink, PENDING),
            )
            .fetchone()
        )
        return float(row["due"]) if row and row["due"] is not None else None

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
            .execute(f"{_DELIVERY_SELECT} WHERE o.alert_id=? ORDER BY o.sink", (alert_id,))
            .fetchall()
        )
        return [_delivery_from_row(r) for r in rows]

    def outbox_depth(self) -> dict[str, int]:
        """Pending deliveries per sink."""
        rows = self._conn().execute(
            "SELECT sink, COUNT(*) AS pending FROM outbox WHERE status=? GROUP BY sink", (PENDING,)
        )
        return {r["sink"]: int(r["pending"]) for r in rows}

    # -- forgetting a camera (camera health) -----------------------------------------

    def forget_camera(self, camera_id: str) -> None:
        """Delete a stale camera's stored registry fields and engine state (its alerts
        stay in the history until pruned)."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM camera_info WHERE camera_id = ?", (camera_id,))
            cur.execute("DELETE FROM camera_state WHERE camera_id = ?", (camera_id,))
