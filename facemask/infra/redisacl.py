"""Redis ACL users per service, least privilege, derived from the stream layout.

Every key pattern below comes from :class:`~facemask.contracts.streams.StreamLayout`
(prefix and names), and every command from what the service really sends. Each user is
split into Redis 7 *selectors* - ``(keys commands)`` pairs - so a command is allowed only
on the keys it is meant for (the alert service may ``XRANGE`` a frame stream, never
``XADD`` to it; ingest may ``XADD`` frames and nothing else on them). Commands a Lua
script sends are checked against the same rules, so ``EVALSHA`` grants nothing more.

=========  ==================================================================================
user       may
=========  ==================================================================================
default    ``PING`` only, no password (health checks); every other connection must log in
ingest     ``XADD`` frames; register cameras (``HSET``/``EXPIRE``/``HGET`` a camera hash,
           ``SADD`` the camera set); read the alerts stream (voice prompt); the layout hash
inference  read frames through its consumer group (``XREADGROUP``/``XACK``/claims/
           ``XPENDING``/``XINFO GROUPS``/``XRANGE``); ``XADD`` detections and dead letters;
           its publish-and-ack script; the layout hash; read the promoted model version
           and its files (``GET``/``HGETALL``/``EXISTS`` the model keys, ``SUBSCRIBE``
           their change channel: rolling updates)
alerts     read detections through its group; ``XRANGE`` frames (snapshots); read the
           camera registry and remove a stale camera from it (``SREM`` the camera set,
           ``DEL`` its hash); ``XADD`` its dead letters and (deduplicated, by script) alerts
keda       read-only stream state of the frame streams (``XINFO GROUPS``, ``XPENDING``,
           ``XLEN``) for the autoscaler
=========  ==================================================================================

Passwords are never stored: the file holds their SHA-256 (``#<hex>``).
``python -m facemask.infra.redisacl --out users.acl`` reads them from
``REDIS_<USER>_PASSWORD`` (e.g. ``REDIS_INGEST_PASSWORD``; make each with
``openssl rand -hex 24``) and the layout from ``FACEMASK_STREAM_PREFIX``; ``--placeholders``
writes the committed template, whose ``#<...>`` entries Redis refuses to load.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence

from facemask.contracts.streams import DEFAULT_PREFIX, StreamLayout

SERVICES = ("ingest", "inference", "alerts", "keda")
MIN_PASSWORD = 16

# Connection housekeeping (redis-py's CLIENT SETINFO is left out: Redis 7.0 does not know
# it, and redis-py ignores its refusal).
CONNECTION = "+ping +hello +client|setname +client|getname +client|id +select"
GROUP_READER = (
    "+xreadgroup +xack +xclaim +xautoclaim +xpending +xinfo|groups +xgroup|create +xrange"
)
LAYOUT = "+hsetnx +hget"  # StreamLayout.check_meta


def selectors(layout: StreamLayout) -> dict[str, list[tuple[str, str]]]:
    """Per user: ``(key patterns, commands)`` selectors (key patterns may be empty)."""
    frames = "~" + layout.every_partition("frames")
    frames_read = "%R" + frames
    detections = "~" + layout.every_partition("detections")
    deadletter = "~" + layout.every_partition("deadletter")
    alerts = "~" + layout.alerts
    delivered = "~{" + layout.alerts + "}:delivered"  # services.alerts.sinks.redisstream
    camera = "~" + layout.camera("*")
    cameras = "~" + layout.cameras
    meta = "~" + layout.meta
    script = "+evalsha +eval +script|load"
    models_read = "%R~" + layout.model_keys
    model_events = "&" + layout.model_events
    return {
        "ingest": [
            ("", CONNECTION),
            (frames, "+xadd"),
            (f"{camera} {cameras}", "+hset +expire +hget +sadd"),
            (f"%R{alerts}", "+xread +xrevrange"),
            (meta, LAYOUT),
        ],
        "inference": [
            ("", CONNECTION),
            (frames, GROUP_READER),
            (f"{detections} {deadletter}", "+xadd"),
            # PUBLISH_AND_ACK: keys frames, detections, dead letters
            (f"{frames} {detections} {deadletter}", script),
            (meta, LAYOUT),
            (models_read, "+get +hgetall +exists"),  # services.inference.models
            (model_events, "+subscribe +unsubscribe"),
        ],
        "alerts": [
            ("", CONNECTION),
            (detections, GROUP_READER),
            (frames_read, "+xrange"),
            (f"%R{camera} %R{cameras}", "+smembers +hgetall +hget"),
            (f"{camera} {cameras}", "+srem +del"),  # registry.unregister (stale cameras)
            ("~" + layout.alerts_deadletter, "+xadd"),
            (f"{alerts} {delivered}", f"+xadd +zadd +zremrangebyscore {script}"),
            (meta, LAYOUT),
        ],
        "keda": [
            ("", CONNECTION),
            (frames_read, "+xinfo|groups +xinfo|stream +xpending +xlen"),
        ],
    }


def user_line(name: str, secret: str, rules: Sequence[tuple[str, str]]) -> str:
    """One ``user`` line: the first rule is the root permissions, the others selectors."""
    (root_keys, root_cmds), *rest = rules
    parts = [f"user {name} on {secret} resetkeys resetchannels -@all {root_cmds}"]
    if root_keys:
        parts.append(root_keys)
    parts += [f"({keys} -@all {cmds})" for keys, cmds in rest]
    return " ".join(parts)


def password_hash(password: str) -> str:
    """``#<sha256 hex>``: how the ACL file names a password without holding it."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def render(
    layout: StreamLayout, secrets: Mapping[str, str], users: Sequence[str] = SERVICES
) -> str:
    """The ACL file: ``secrets`` maps each of :data:`SERVICES` to its ``#hash`` (or a
    placeholder); the default user may only ``PING``. (Redis allows no comments in an ACL
    file: this module is its documentation.)"""
    lines = ["user default on nopass resetkeys resetchannels -@all +ping"]
    rules = selectors(layout)
    lines += [user_line(name, secrets[name], rules[name]) for name in users]
    return "\n".join(lines) + "\n"


def placeholders() -> dict[str, str]:
    """Entries Redis refuses to load (so the committed template cannot run as is)."""
    return {name: f"#<sha256-of-REDIS_{name.upper()}_PASSWORD>" for name in SERVICES}


def hashes_from_env(environ: Mapping[str, str], users: Sequence[str] = SERVICES) -> dict[str, str]:
    """``#hash`` per user from ``REDIS_<USER>_PASSWORD``; ``ValueError`` naming what is
    missing or too short."""
    out: dict[str, str] = {}
    problems = []
    for name in users:
        variable = f"REDIS_{name.upper()}_PASSWORD"
        password = environ.get(variable, "")
        if len(password) < MIN_PASSWORD or not re.fullmatch(r"[A-Za-z0-9._~-]+", password):
            problems.append(variable)
            continue
        out[name] = password_hash(password)
    if problems:
        raise ValueError(
            f"set {', '.join(problems)}: at least {MIN_PASSWORD} URL-safe characters "
            "(openssl rand -hex 24)"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facemask.infra.redisacl``: write the ACL file."""
    parser = argparse.ArgumentParser(prog="python -m facemask.infra.redisacl", description=__doc__)
    parser.add_argument("--out", default="-", help="file to write (default: stdout)")
    parser.add_argument(
        "--placeholders", action="store_true", help="the committed template (no passwords)"
    )
    parser.add_argument("--prefix", default=None, help="key prefix (FACEMASK_STREAM_PREFIX)")
    parser.add_argument(
        "--users",
        default=",".join(SERVICES),
        help=f"comma-separated users to write (default: all of {', '.join(SERVICES)})",
    )
    args = parser.parse_args(argv)
    users = [u.strip() for u in args.users.split(",") if u.strip()]
    unknown = sorted(set(users) - set(SERVICES))
    if unknown or not users:
        parser.error(f"--users: unknown {unknown}; known: {', '.join(SERVICES)}")
    prefix = args.prefix or os.environ.get("FACEMASK_STREAM_PREFIX") or DEFAULT_PREFIX
    layout = StreamLayout(prefix=prefix)
    try:
        secrets = placeholders() if args.placeholders else hashes_from_env(os.environ, users)
    except ValueError as exc:
        sys.stderr.write(f"redisacl: {exc}\n")
        return 2
    text = render(layout, secrets, users)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
