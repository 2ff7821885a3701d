"""``facemask models``: the model versions of the local store and the cluster's rollout
(``list``, ``show``, ``promote``, ``rollback``, ``active``), and the pinned upstream
artifacts with the TFLite models derived from them (``fetch``, ``artifacts``, ``dir``,
``build``).

``list`` shows ``upstream`` and every stored version (see
:mod:`facemask.model.registry`), newest first, marking the version promoted for the
cluster when a Redis URL is known (``--redis-url`` or ``FACEMASK_REDIS_URL``).
``promote`` and ``rollback`` change the cluster's model in that Redis (default: the
services' ``redis://127.0.0.1:6379/0``), under ``FACEMASK_STREAM_PREFIX``'s keys; every
inference replica follows (see :mod:`facemask.infra.rollout`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import redis

from facemask.contracts.streams import DEFAULT_PREFIX, StreamLayout
from facemask.infra import rollout
from facemask.infra.redact import redact_text, redact_url
from facemask.infra.redisconn import connect
from facemask.infra.settings import ServiceSettings
from facemask.model import quantize
from facemask.model import store as modelstore
from facemask.model.registry import ModelRegistry, ModelVersion, RegistryError

logger = logging.getLogger(__name__)

REDIS_URL_ENV = "FACEMASK_REDIS_URL"
PREFIX_ENV = "FACEMASK_STREAM_PREFIX"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` sub-commands."""
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    text = "the model versions of the local store (upstream first, then newest first)"
    listing = sub.add_parser("list", help=text, description=text)
    listing.add_argument("--json", action="store_true", help="one JSON object per version")
    _redis_arguments(listing, "mark the version promoted for the cluster in this Redis")
    text = "a version's model card and files"
    show = sub.add_parser("show", help=text, description=text)
    show.add_argument("ref", metavar="VERSION|PATH", help="version id, unique prefix or upstream")
    show.add_argument(
        "--verify", action="store_true", help="check every file against its card's sha256"
    )
    text = "make a version the model of every inference replica (files uploaded to Redis)"
    promote = sub.add_parser("promote", help=text, description=text)
    promote.add_argument("ref", metavar="VERSION", help="version id, unique prefix, or upstream")
    _by_argument(promote)
    _redis_arguments(promote)
    text = "go back to the version the promoted one replaced (repeat to go forward)"
    rollback = sub.add_parser("rollback", help=text, description=text)
    _by_argument(rollback)
    _redis_arguments(rollback)
    text = "print the version promoted for the cluster (nothing: the configured models)"
    _redis_arguments(sub.add_parser("active", help=text, description=text))
    text = "fetch (mirror or download) and verify artifacts"
    fetch = sub.add_parser("fetch", help=text, description=text)
    fetch.add_argument(
        "--group",
        action="append",
        choices=["model", "samples"],
        help="artifact group to fetch (repeatable; default: model and samples)",
    )
    fetch.add_argument("--all", action="store_true", help="include optional artifacts (caffe)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    for name, text in (
        ("artifacts", "list the pinned upstream artifacts and what is cached"),
        ("dir", "print the cache directory"),
    ):
        sub.add_parser(name, help=text, description=text)
    text = "convert the frozen graph to TFLite float32 and int8 (skipped when up to date)"
    build = sub.add_parser("build", aliases=["quantize"], help=text, description=text)
    build.add_argument(
        "--variant",
        action="append",
        choices=list(quantize.VARIANTS),
        help="variant to build (repeatable; default: both)",
    )
    build.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="images calibrating int8 (default: ../shared/data/facemask-dev/images when "
        "present, else the sample images)",
    )
    build.add_argument("--force", action="store_true", help="build even when up to date")


def _redis_arguments(parser: argparse.ArgumentParser, text: str | None = None) -> None:
    parser.add_argument(
        "--redis-url",
        default=None,
        help=(text or "the cluster's Redis")
        + f" (default: ${REDIS_URL_ENV}"
        + ("" if text else f", else {_default_redis_url()}")
        + ")",
    )
    parser.add_argument(
        "--stream-prefix",
        default=None,
        help=f"prefix of the Redis keys (default: ${PREFIX_ENV}, else {DEFAULT_PREFIX})",
    )


def _by_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by", default=None, help="who changes the model, recorded (default: user@host)"
    )


def _default_redis_url() -> str:
    return str(ServiceSettings.model_fields["redis_url"].default)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; one clear error line and exit 1 on failure."""
    command = args.models_command
    try:
        if command == "dir":
            sys.stdout.write(f"{modelstore.cache_dir()}\n")
            return 0
        if command in ("build", "quantize"):
            return _build(args)
        if command == "artifacts":
            return _artifacts()
        if command == "fetch":
            return _fetch(args)
        if command == "list":
            return _list(args)
        if command == "show":
            return _show(args)
        return _rollout(args)
    except (RegistryError, rollout.RolloutError, modelstore.ModelStoreError) as exc:
        sys.stderr.write(f"facemask models {command}: error: {exc}\n")
        return 1
    except redis.RedisError as exc:
        url = redact_url(_redis_url(args))
        sys.stderr.write(
            f"facemask models {command}: error: Redis at {url}: {redact_text(str(exc))}\n"
        )
        return 1


def _artifacts() -> int:
    for artifact in modelstore.load_manifest():
        cached = (modelstore.cache_dir() / artifact.name).is_file()
        state = "cached" if cached else "missing"
        sys.stdout.write(f"{artifact.name}\t{artifact.group}\t{state}\t{artifact.sha256}\n")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    paths = modelstore.fetch(
        args.group or ("model", "samples"), include_optional=args.all, force=args.force
    )
    logger.info("%d artifacts verified in %s", len(paths), modelstore.cache_dir())
    return 0


def _summary(model: ModelVersion, active: str | None) -> dict[str, Any]:
    metrics = model.card.get("metrics")
    dev = metrics.get("dev") if isinstance(metrics, dict) else None
    return {
        "version": model.version,
        "active": model.version == active,
        "parent": model.parent,
        "input_size": model.input_size,
        "ap50": dev.get("ap50") if isinstance(dev, dict) else None,
        "created": model.card.get("created"),
        "variants": [v for v in model.variants if model.paths[v].is_file()],
        "path": str(model.path),
    }


def _list(args: argparse.Namespace) -> int:
    registry = ModelRegistry()
    active: str | None = None
    if args.redis_url or os.environ.get(REDIS_URL_ENV):
        try:
            found = rollout.active(_client(args), layout=_layout(args))
            active = found.version if found else None
        except (redis.RedisError, rollout.RolloutError) as exc:
            sys.stderr.write(
                f"facemask models list: warning: no active version shown: {redact_text(str(exc))}\n"
            )
    rows = [_summary(m, active) for m in registry.list(include_upstream=True)]
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    table = [("", "VERSION", "PARENT", "INPUT", "AP50", "CREATED", "FILES")]
    for row in rows:
        ap50 = row["ap50"]
        table.append(
            (
                "*" if row["active"] else "",
                row["version"],
                row["parent"] or "-",
                str(row["input_size"]),
                f"{ap50:.3f}" if isinstance(ap50, int | float) else "-",
                row["created"] or "-",
                ",".join(row["variants"]) or "(not fetched)",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for line in table:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
    sys.stdout.write(f"store: {registry.root}\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    model = ModelRegistry().get(args.ref)
    if args.verify:
        model.verify()
    out: dict[str, Any] = {
        "path": str(model.path),
        "files": {v: str(p) for v, p in model.paths.items() if p.is_file()},
        "card": model.card,
    }
    if args.verify:
        out["verified"] = True
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    client = _client(args)
    layout = _layout(args)
    try:
        if args.models_command == "active":
            found = rollout.active(client, layout=layout)
            if found is not None:
                sys.stdout.write(found.to_json() + "\n")
            return 0
        by = args.by if args.by is not None else _operator()
        if args.models_command == "promote":
            changed = rollout.promote(client, ModelRegistry(), args.ref, by=by, layout=layout)
        else:
            changed = rollout.rollback(client, ModelRegistry(), by=by, layout=layout)
    finally:
        client.close()
    sys.stdout.write(changed.to_json() + "\n")
    logger.info(
        "every inference replica will load %s (previous: %s)",
        changed.version,
        changed.previous or "the configured model",
    )
    return 0


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _redis_url(args: argparse.Namespace) -> str:
    return str(
        getattr(args, "redis_url", None) or os.environ.get(REDIS_URL_ENV) or _default_redis_url()
    )


def _client(args: argparse.Namespace) -> Any:
    return connect(_redis_url(args))


def _layout(args: argparse.Namespace) -> StreamLayout:
    prefix = args.stream_prefix or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX
    try:
        return StreamLayout(prefix=prefix)
    except ValueError as exc:
        raise rollout.RolloutError(str(exc)) from None


def _build(args: argparse.Namespace) -> int:
    try:
        results = quantize.build(
            args.variant or tuple(quantize.VARIANTS),
            calibration_dir=args.calibration,
            force=args.force,
        )
    except quantize.QuantizeError as exc:
        sys.stderr.write(f"facemask models build: error: {exc}\n")
        return 1
    for result in results:
        state = f"built in {result.seconds:.1f} s" if result.built else "up to date"
        sys.stdout.write(f"{result.variant}\t{result.path}\t{state}\n")
    return 0
