"""The alert service: detections in, alerts out, plus the live dashboard.

Pipeline: :mod:`~services.alerts.consumer` reads every partition's detections stream with
its own consumer group (``alerts``); :mod:`~services.alerts.engine` tracks faces per
camera (:mod:`~services.alerts.zones` drops faces in ignore masks or outside include
zones, :mod:`~services.alerts.tracker` is a greedy IoU tracker with re-entry) and applies
the rule of :mod:`~services.alerts.rules` (a track ``no_mask`` in K of its last N frames,
score >= s, face >= m px, one alert per track and violation, a cooldown per track, an
optional per-camera grouping window); :mod:`~services.alerts.snapshots`
draws the alert's frame; :mod:`~services.alerts.outbox` delivers each stored
:class:`~services.alerts.records.AlertRecord` to the sinks of :mod:`~services.alerts.sinks`
(webhook, Slack, MQTT, the Redis alerts stream); :mod:`~services.alerts.cameras` joins the
camera registry with the engine's statistics; the :mod:`~services.alerts.api` package
serves the HTTP API, the server-sent events and the dashboard (``static/``), one router
per domain, built by ``create_app`` from explicit collaborators;
:mod:`~services.alerts.service` is the composition root that builds and runs it all, and
:mod:`~services.alerts.__main__` is the command (``facemask serve-alerts`` /
``python -m services.alerts``).

Durability - SQLite, not Redis. The state lives in one SQLite database in WAL mode
(``FACEMASK_ALERTS_STATE_DIR/alerts.sqlite3``, ``synchronous=FULL``), see
:mod:`~services.alerts.store`. For each batch of detections entries ONE transaction
stores the new alerts, one outbox row per (alert, enabled sink), the serialised tracker /
rule state of every camera the batch touched, and the last entry id processed per
detections stream; only then are the entries acknowledged (``XACK``). After a crash or a
restart the state is restored; entries at or below the stored id are acknowledged
without being processed again, the others are processed from the restored state, which
gives the same alerts with the same (deterministic) ids, and storing an id twice is a
no-op. So a restart neither loses nor duplicates an alert, and deliveries resume from the
outbox. Redis is not used for this state because its streams are trimmed and it may run
without persistence; SQLite keeps the unit of durability local and atomic.

Deliveries are at least once per sink with an idempotency key (the alert id; webhook
header ``X-Facemask-Delivery``); the Redis stream sink is exactly once (a Lua script
checks a set of delivered ids). Run ONE alert service per consumer group: tracking needs
all frames of a camera in one process.

Defaults: K=5 of N=8 frames (1 to 1.6 s at 5 fps), score >= 0.6, face >= 24 px,
cooldown 5 s per track, no grouping, track re-entry 5 s, compliance window 60 s, HTTP
port 8080. Nothing here imports TensorFlow.
"""
