"""Detections consumer: reads every partition's detections stream, commits, then acks.

One thread, the reader of a :class:`~facemask.infra.consumer.StreamGroupConsumer`. The
consumer group (``alerts`` by default) is the alert service's own, so it is independent
of any other reader of the detections streams. Each loop:

1. read a batch: first this consumer's pending entries (``XREADGROUP`` id ``0``: read
   before a crash or restart and never acknowledged), then new ones (``>``); every
   ``claim_interval`` seconds, entries idle for ``claim_idle`` seconds in other consumers
   of the group are taken over (``XAUTOCLAIM``);
2. entries at or below the stream's committed offset were processed before a restart:
   they are only acknowledged. Malformed entries go to ``layout.alerts_deadletter`` with
   a reason (counted); so do, dead-lettered by the
   :class:`~facemask.infra.consumer.StreamGroupConsumer` itself, entries trimmed while
   pending and entries already delivered ``max_deliveries`` times. Duplicates of a frame
   already seen are dropped. The rest feed the
   :class:`~services.alerts.engine.AlertEngine`;
3. each new alert gets its snapshot (frame fetched by id from the partition's frame
   stream, boxes drawn, the violator singled out) and its clean frame, and the camera's
   name and place from the registry;
4. ONE SQLite transaction stores the alerts, their outbox rows, the touched cameras'
   engine state and the streams' offsets (:meth:`AlertStore.commit_batch`);
5. ``on_entries`` gets the batch's new entries (the camera board's arrival times); only
   then ``XACK``; then the outbox workers and the live feed are notified.

Any failure before the commit rolls the engine back to the committed state
(``on_error``). A Redis fault (gone, OOM, failover; see
:func:`~facemask.infra.redisconn.classify`) reads the pending entries again after a
back-off. Anything else (an entry that makes the engine, a snapshot or the store raise)
is narrowed down by the StreamGroupConsumer: the batch is bisected, the good entries are
processed and committed, the entry that keeps raising is dead-lettered with reason
``error`` after ``entry_attempts`` failures; it never stops the other cameras. So a
batch is processed exactly once in effect: a crash anywhere neither loses nor duplicates
an alert (alert ids are deterministic, and storing an id twice is a no-op).

Ordering relies on a single active alert service per consumer group (tracking needs all
frames of a camera in one process, and the state lives in its local database).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, WireError
from facemask.infra.consumer import Delivery, GroupOptions, StreamGroupConsumer
from facemask.infra.redisconn import RedisClient, classify
from services.alerts.config import AlertSettings
from services.alerts.engine import AlertEngine, NewAlert
from services.alerts.metrics import AlertMetrics
from services.alerts.snapshots import SnapshotStore, fetch_frame, render_alert
from services.alerts.store import AlertRecord, AlertStore, parse_sid

logger = logging.getLogger(__name__)

CameraInfo = Callable[[str], Mapping[str, str]]


def _valid_sid(sid: str) -> bool:
    try:
        parse_sid(sid)
    except ValueError:
        return False
    return "-" in sid


class DetectionsConsumer:
    """See the module docstring."""

    def __init__(
        self,
        client: RedisClient,
        layout: StreamLayout,
        settings: AlertSettings,
        engine: AlertEngine,
        store: AlertStore,
        snapshots: SnapshotStore,
        metrics: AlertMetrics,
        sinks: Sequence[str],
        *,
        camera_info: CameraInfo,
        on_alerts: Callable[[list[AlertRecord]], None],
        on_entries: Callable[[Sequence[DetectionsEntry]], None] | None = None,
    ) -> None:
        self.client: Any = client  # redis-py's stubs do not model stream replies
        self.layout = layout
        self.settings = settings
        self.engine = engine
        self.store = store
        self.snapshots = snapshots
        self.metrics = metrics
        self.sinks = list(sinks)
        self.camera_info = camera_info
        self.on_alerts = on_alerts
        self.on_entries = on_entries
        self.offsets: dict[str, str] = {}
        self.streams = StreamGroupConsumer(
            client,
            layout.all_detections(),
            GroupOptions.from_settings(settings, start_id=settings.group_start),
            self.process,
            name="detections",
            on_error=self._failed,
            on_reclaimed=metrics.reclaimed.inc,
            deadletter_key=lambda _stream: layout.alerts_deadletter,
            deadletter_maxlen=settings.deadletter_maxlen,
            on_deadletter=self._rejected,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Restore the committed state and start the consumer thread."""
        self.restore()
        self.streams.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the batch in progress (commit and ack), then stop."""
        return self.streams.stop(timeout)

    def running(self) -> bool:
        """Whether the thread is alive and has its consumer groups."""
        return self.streams.running

    def restore(self) -> None:
        """Load the engine state and offsets from the store; read pending entries next."""
        cameras, offsets = self.store.load_state()
        self.engine.restore(cameras)
        self.offsets = dict(offsets)
        self.streams.rewind()

    def _rejected(self, reason: str) -> None:
        """An entry the StreamGroupConsumer dead-lettered (trimmed, max_deliveries, error)."""
        self.metrics.deadletters.labels(reason).inc()
        self.metrics.consumed.inc()

    def _failed(self, exc: BaseException) -> None:
        """A batch failed (its entries are read again, or it is narrowed down to the
        entry that raises): count it, roll back."""
        kind = classify(exc)
        if kind != "other":
            self.metrics.redis_errors.inc()
            self.metrics.redis_faults.labels(kind).inc()
        else:
            self.metrics.batch_failures.inc()
        try:
            self.restore()
        except Exception:
            logger.exception("cannot reload the committed state")

    # -- one batch -------------------------------------------------------------------

    def process(self, items: Sequence[Delivery]) -> list[AlertRecord]:
        """Process, commit and acknowledge one batch; returns the alerts stored."""
        acks: dict[str, list[str]] = defaultdict(list)
        offsets: dict[str, str] = {}
        new_alerts: list[NewAlert] = []
        deadletters: list[tuple[Delivery, str, str]] = []
        faces: Counter[tuple[str, str]] = Counter()
        suppressed: Counter[str] = Counter()
        ignored: Counter[tuple[str, str]] = Counter()
        replayed = duplicates = consumed = 0
        last_capture = None
        arrived: list[DetectionsEntry] = []
        for item in items:
            acks[item.stream].append(item.sid)
            committed = self.offsets.get(item.stream)
            if (
                committed is not None
                and parse_sid(item.sid) <= parse_sid(committed)
                and not self.streams.failing(item)  # isolated: later entries went ahead
            ):
                replayed += 1
                continue
            previous = offsets.get(item.stream)
            if previous is None or parse_sid(item.sid) > parse_sid(previous):
                offsets[item.stream] = item.sid
            consumed += 1
            if item.fields is None or item.rejected is not None:  # the consumer's business
                continue
            try:
                entry = DetectionsEntry.from_fields(
                    item.fields, max_skew=self.settings.max_clock_skew
                )
                if not _valid_sid(entry.frame_sid):
                    raise WireError("bad_field", f"frame_sid {entry.frame_sid[:40]!r}")
            except WireError as exc:
                deadletters.append((item, exc.reason, exc.detail))
                continue
            outcome = self.engine.process(item.stream, item.sid, entry)
            if outcome.duplicate:
                duplicates += 1
                continue
            last_capture = entry.capture_ts
            arrived.append(entry)
            for label in outcome.faces:
                faces[(entry.camera_id, label)] += 1
            if outcome.suppressed:
                suppressed[entry.camera_id] += outcome.suppressed
            for reason, count in outcome.ignored.items():
                ignored[(entry.camera_id, reason)] += count
            new_alerts.extend(outcome.alerts)
        records = []
        missing: list[str] = []
        for alert in new_alerts:
            record = self._materialise(alert)
            if record.snapshot is None:
                missing.append(alert.camera_id)
            records.append(record)
        if deadletters:
            self._deadletter(deadletters)
        states = self.engine.take_dirty()
        stored = []
        if records or states or offsets:
            stored = self.store.commit_batch(records, self.sinks, states, offsets)
        self.offsets.update(offsets)
        if arrived and self.on_entries is not None:
            self.on_entries(arrived)  # before the ack: an acknowledged entry has arrived
        self._ack(acks)
        # accounting, after the commit (a rolled-back batch is counted when redone)
        self.metrics.consumed.inc(consumed)
        if replayed:
            self.metrics.replayed.inc(replayed)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        for (camera_id, label), count in faces.items():
            self.metrics.faces_seen.labels(camera_id, label).inc(count)
        for camera_id, count in suppressed.items():
            self.metrics.alerts_suppressed.labels(camera_id).inc(count)
        for (camera_id, reason), count in ignored.items():
            self.metrics.faces_ignored.labels(camera_id, reason).inc(count)
        for _item, reason, _detail in deadletters:
            self.metrics.deadletters.labels(reason).inc()
        for camera_id in missing:
            self.metrics.snapshots_missing.labels(camera_id).inc()
        if last_capture is not None:
            self.metrics.processing_lag.set(max(0.0, time.time() - last_capture))
        for record in stored:
            self.metrics.alerts.labels(record.camera_id).inc()
            logger.info(
                "alert raised",
                extra={
                    "alert_id": record.alert_id,
                    "camera_id": record.camera_id,
                    "track_id": record.track_id,
                    "violators": record.violators,
                    "frame_id": record.frame_id,
                    "score": round(record.score, 3),
                    "snapshot": record.snapshot is not None,
                },
            )
        if stored:
            self.on_alerts(stored)
        return stored

    def _materialise(self, alert: NewAlert) -> AlertRecord:
        info = self.camera_info(alert.camera_id)
        name = info.get("name") or alert.camera_id
        place = info.get("location", "")
        snapshot = thumbnail = clean = None
        frames = self.layout.frames(self.layout.partition_of_key(alert.stream))
        frame = fetch_frame(self.client, frames, alert.frame_sid)
        if frame is None:
            logger.warning(
                "alert frame already trimmed; alert raised without a snapshot",
                extra={"camera_id": alert.camera_id, "frame_sid": alert.frame_sid},
            )
        else:
            pictures = render_alert(
                frame,
                alert.detections,
                [alert.box],  # the violators the alert names
                on_reject=lambda reason: self.metrics.frames_rejected.labels(
                    "snapshot", reason
                ).inc(),
            )
            if pictures is None:
                logger.warning("alert frame does not decode", extra={"frame_sid": alert.frame_sid})
            else:
                try:
                    saved = self.snapshots.save(
                        alert.alert_id,
                        alert.ts,
                        pictures.image,
                        thumbnail=pictures.thumbnail,
                        frame=frame,
                    )
                    snapshot, thumbnail, clean = saved.image, saved.thumbnail, saved.frame
                except OSError as exc:  # disk full, permissions: the alert matters more
                    logger.error(
                        "cannot write the snapshot; alert raised without it",
                        extra={"alert_id": alert.alert_id, "error": str(exc)},
                    )
        where = f"{name} ({place})" if place else name
        who = "Person" if alert.violators == 1 else f"{alert.violators} people"
        return AlertRecord(
            alert_id=alert.alert_id,
            camera_id=alert.camera_id,
            ts=alert.ts,
            created=time.time(),
            kind="no_mask",
            frame_id=alert.frame_id,
            frame_sid=alert.frame_sid,
            stream=alert.stream,
            track_id=alert.track_id,
            score=alert.score,
            box=alert.box,
            width=alert.width,
            height=alert.height,
            detections=alert.detections,
            camera_name=name,
            place=place,
            message=f"{who} without a mask at {where}",
            snapshot=snapshot,
            thumbnail=thumbnail,
            rule=alert.rule.to_dict(),
            frame=clean,
            violators=alert.violators,
            track_ids=alert.track_ids,
        )

    def _deadletter(self, items: Sequence[tuple[Delivery, str, str]]) -> None:
        self.streams.deadletter(
            items, stream=self.layout.alerts_deadletter, maxlen=self.settings.deadletter_maxlen
        )
        for item, reason, detail in items:
            logger.warning(
                "detections entry dead-lettered",
                extra={"stream": item.stream, "sid": item.sid, "reason": reason, "error": detail},
            )

    def _ack(self, acks: Mapping[str, list[str]]) -> None:
        self.streams.ack(acks)
