"""Cluster-wide model rollout through Redis: promote a version, roll back, read the active
version, and fetch a version's files on a replica.

Keys (from :class:`~facemask.contracts.streams.StreamLayout`, prefix ``facemask``)::

    facemask:model:active        JSON {"version", "previous", "promoted_at", "by"}
    facemask:model:events        pub/sub: the same JSON on every change
    facemask:model:blob:<v>      hash {file name: bytes}: model.pb, *.tflite, card.json

No ``active`` key means every inference replica runs its configured model
(``FACEMASK_INFERENCE_MODEL``). :func:`promote` uploads the version's files first, then
swaps the key and publishes the change in one script that only succeeds when the key
still holds what was read (two operators promoting at once: one retries, none is lost),
so a replica told about a version can always download it. Replicas also poll the key, so
a missed message only delays a swap. :func:`rollback` is the same operation towards the
``previous`` version (repeating it goes forward again). Redis holds the files of the
active and the previous version only: a change deletes those of the version that falls
out of that pair (Redis runs without eviction; promoting an older version again uploads
its files again).

:func:`fetch_version` makes a version present in a replica's local
:class:`~facemask.model.registry.ModelRegistry`: a stored one is verified, a missing one
downloaded, its id and every file's sha256 checked against its card before anything is
stored; anything else is a :class:`RolloutError`. ``upstream`` is never uploaded: every
replica has the pinned artifacts. Clients must be made with ``decode_responses=False``
(the files are bytes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from facemask.contracts.streams import RedisClient, StreamLayout
from facemask.model.registry import (
    UPSTREAM,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    check_version_id,
    utc_now,
)

logger = logging.getLogger(__name__)

SWAP_ATTEMPTS = 10
"""Compare-and-set attempts before a promote gives up (only concurrent changes retry)."""

# KEYS[1] active key; ARGV[1] the value read ('' for none), ARGV[2] new value, ARGV[3]
# channel. Sets and publishes only when the key still holds what the caller read.
_SWAP = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

# KEYS[1] blob hash; ARGV name, bytes, name, bytes, ... Replaces the whole hash at once, so
# a reader never sees the files of two uploads mixed.
_REPLACE_HASH = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""


class RolloutError(RuntimeError):
    """A rollout step failed; the message says what and what to do."""


@dataclass(frozen=True, slots=True)
class ActiveModel:
    """The version promoted for the cluster and the one it replaced (``None``: the
    services' configured model)."""

    version: str
    previous: str | None
    promoted_at: str
    by: str = ""

    def to_json(self) -> str:
        """The key's and the event's JSON."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ActiveModel:
        """Parse the key or an event; :class:`RolloutError` when it is not a valid one
        (versions are checked, so a hostile value never becomes a path)."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            previous = data.get("previous")
            model = cls(
                version=check_version_id(str(data["version"])),
                previous=None if previous is None else check_version_id(str(previous)),
                promoted_at=str(data.get("promoted_at", "")),
                by=str(data.get("by", "")),
            )
        except (ValueError, KeyError, TypeError, RegistryError) as exc:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            raise RolloutError(f"invalid active model record {text[:120]!r}: {exc}") from None
        return model


def active(client: RedisClient, *, layout: StreamLayout | None = None) -> ActiveModel | None:
    """The promoted version, or ``None`` when none is (the configured model applies)."""
    raw = client.get((layout or StreamLayout()).model_active)
    return None if raw is None else ActiveModel.from_json(raw)


def upload(
    client: RedisClient,
    registry: ModelRegistry,
    version: str,
    *,
    layout: StreamLayout | None = None,
) -> int:
    """Put a stored version's files (verified first) into its blob hash; returns bytes."""
    layout = layout or StreamLayout()
    try:
        blobs = registry.blobs(check_version_id(version))
    except RegistryError as exc:
        raise RolloutError(f"cannot upload model {version}: {exc}") from None
    args: list[Any] = []
    for name, data in sorted(blobs.items()):
        args += [name, data]
    client.eval(_REPLACE_HASH, 1, layout.model_blob(version), *args)
    size = sum(len(d) for d in blobs.values())
    logger.info(
        "model files uploaded", extra={"version": version, "files": len(blobs), "bytes": size}
    )
    return size


def promote(
    client: RedisClient,
    registry: ModelRegistry,
    ref: str,
    *,
    by: str = "",
    layout: StreamLayout | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> ActiveModel:
    """Make ``ref`` (a stored version, a unique prefix or ``upstream``) the cluster's
    model: upload its files, then set the active key and publish. Promoting the active
    version again uploads its files again and changes nothing else."""
    layout = layout or StreamLayout()
    try:
        found = registry.get(ref)
    except RegistryError as exc:
        raise RolloutError(str(exc)) from None
    version = found.version
    if not registry.has(version):
        raise RolloutError(
            f"{ref} is not a stored model version (add it to the store {registry.root} first)"
        )
    if version != UPSTREAM:
        upload(client, registry, version, layout=layout)

    def change(current: ActiveModel | None) -> ActiveModel | None:
        if current is not None and current.version == version:
            return None
        previous = current.version if current is not None else None
        return ActiveModel(version, previous, _iso(clock()), by)

    return _swap(client, layout, change, tolerate_invalid=True)


def rollback(
    client: RedisClient,
    registry: ModelRegistry,
    *,
    by: str = "",
    layout: StreamLayout | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> ActiveModel:
    """Go back to the version the active one replaced (its files uploaded again from the
    local store when Redis lost them); a clear error when there is none."""
    layout = layout or StreamLayout()

    def change(current: ActiveModel | None) -> ActiveModel:
        if current is None:
            raise RolloutError("no model version is promoted, so there is nothing to roll back")
        target = current.previous
        if target is None:
            raise RolloutError(
                f"nothing to roll back to: {current.version} was promoted over the services' "
                "configured model; promote the version you want instead (e.g. `upstream`)"
            )
        if target != UPSTREAM and not client.exists(layout.model_blob(target)):
            if not registry.has(target):
                raise RolloutError(
                    f"cannot roll back to {target}: its files are neither in Redis nor in "
                    f"the local store {registry.root}"
                )
            upload(client, registry, target, layout=layout)
        return ActiveModel(target, current.version, _iso(clock()), by)

    return _swap(client, layout, change, tolerate_invalid=False)


def fetch_version(
    client: RedisClient,
    registry: ModelRegistry,
    version: str,
    *,
    layout: StreamLayout | None = None,
) -> ModelVersion:
    """The version in the local store, downloaded from Redis when missing; every file is
    checked against the card (a stored one too). :class:`RolloutError` otherwise."""
    layout = layout or StreamLayout()
    try:
        check_version_id(version)
        if registry.has(version):
            found = registry.get(version)
            found.verify()
            return found
    except RegistryError as exc:
        raise RolloutError(str(exc)) from None
    raw = client.hgetall(layout.model_blob(version))
    if not raw:
        raise RolloutError(
            f"model {version} has no files in Redis ({layout.model_blob(version)}); "
            "promote it again from a machine that has it"
        )
    blobs: dict[str, bytes] = {}
    for name, data in raw.items():
        if not isinstance(name, bytes) or not isinstance(data, bytes):
            raise RolloutError("the Redis client decodes responses; model files need bytes")
        blobs[name.decode("utf-8", "replace")] = data
    try:
        stored = registry.add_bytes(blobs, expect=version)
    except RegistryError as exc:
        raise RolloutError(f"model {version} from Redis refused: {exc}") from None
    logger.info(
        "model version downloaded",
        extra={"version": version, "bytes": sum(len(d) for d in blobs.values())},
    )
    return stored


def _drop_unreachable(
    client: RedisClient, layout: StreamLayout, old: ActiveModel | None, new: ActiveModel
) -> None:
    """Delete the files of the version that left the (active, previous) pair: nothing can
    ask for it any more, and Redis keeps no more than two versions' files (promoting an
    older version again uploads its files again)."""
    if old is None:
        return
    keep = {new.version, new.previous, None, UPSTREAM}
    for version in {old.version, old.previous}:
        if version in keep or version is None:
            continue
        client.delete(layout.model_blob(version))
        logger.info("model files removed from Redis", extra={"version": version})


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _swap(
    client: RedisClient,
    layout: StreamLayout,
    change: Callable[[ActiveModel | None], ActiveModel | None],
    *,
    tolerate_invalid: bool,
) -> ActiveModel:
    """Compare-and-set the active key with ``change(current)`` (``None``: keep it)."""
    for _ in range(SWAP_ATTEMPTS):
        raw = client.get(layout.model_active)
        current: ActiveModel | None = None
        if raw is not None:
            try:
                current = ActiveModel.from_json(raw)
            except RolloutError as exc:
                if not tolerate_invalid:
                    raise
                logger.warning(
                    "replacing an invalid active model record", extra={"error": str(exc)}
                )
        new = change(current)
        if new is None and current is not None:
            return current
        if new is None:
            raise RolloutError("no model version is promoted")
        if client.eval(
            _SWAP, 1, layout.model_active, raw or b"", new.to_json(), layout.model_events
        ):
            logger.info("active model changed", extra=asdict(new))
            _drop_unreachable(client, layout, current, new)
            return new
    raise RolloutError(
        f"the active model kept changing under this update ({SWAP_ATTEMPTS} attempts); retry"
    )
