"""The local model store: trained model versions, content-addressed, each with a model card.

A version is a directory ``<root>/<version>/`` holding the files the runtimes load and a
``card.json`` describing where the model came from::

    model.pb               frozen TensorFlow graph (the upstream tensor names)   variant "tf"
    model.float32.tflite   TFLite float32                                         variant "float32"
    model.int8.tflite      TFLite int8, calibrated (optional)                     variant "int8"
    card.json              version, parent, datasets, recipe, input_size, metrics,
                           created (ISO 8601 UTC), files {name: sha256}

The version id is the first 16 hex characters of the sha256 of ``model.pb``: the same
weights always get the same id, on every machine, and an id names exactly one model.
Versions are written atomically (a temporary directory renamed into place), so a reader
never sees half a version. ``"upstream"`` is reserved: the pinned upstream model, whose
files are the verified artifacts of :mod:`facemask.model.store` and whose card is
synthesised from the manifest.

The root is ``$FACEMASK_MODEL_STORE``, else ``store/`` in the artifact cache directory
(``$FACEMASK_MODEL_DIR`` or ``models/cache``). :meth:`ModelRegistry.get` resolves what a
user types: a full id, a unique prefix of at least :data:`MIN_PREFIX` characters,
``upstream``, or a path (a version directory, a ``.pb`` or a ``.tflite`` file).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facemask.core.preprocess import INPUT_SIZE
from facemask.model import store as modelstore

logger = logging.getLogger(__name__)

STORE_ENV = "FACEMASK_MODEL_STORE"
UPSTREAM = "upstream"
CARD_FILE = "card.json"
VARIANT_FILES: dict[str, str] = {
    "tf": "model.pb",
    "float32": "model.float32.tflite",
    "int8": "model.int8.tflite",
}
"""Variant -> its file name in a version directory."""
MODEL_FILES = frozenset(VARIANT_FILES.values())
ID_LENGTH = 16
MIN_PREFIX = 6
UPSTREAM_INPUT_SIZE = INPUT_SIZE[0]
"""Input width = height of the upstream model, in pixels."""
_ID_RE = re.compile(r"[0-9a-f]{16}")
_PREFIX_RE = re.compile(r"[0-9a-f]{6,16}")
UPSTREAM_FILES: dict[str, str] = {
    "tf": "face_mask_detection.pb",
    "float32": "face_mask_detection.float32.tflite",
    "int8": "face_mask_detection.int8.tflite",
}
"""Variant -> the upstream model's file in the artifact cache (the TFLite ones are built
by ``facemask models build``, as the ``tflite`` runtime's variants)."""


class RegistryError(RuntimeError):
    """A clear, one-line problem with a model version: unknown, ambiguous, incomplete or
    not matching its card."""


def is_version_id(text: str) -> bool:
    """True when ``text`` is a well-formed version id (16 lowercase hex characters)."""
    return bool(_ID_RE.fullmatch(text))


def check_version_id(text: str) -> str:
    """``text`` if it is ``upstream`` or a well-formed id; :class:`RegistryError` otherwise
    (a version read from the network must never become a path outside the store)."""
    if text == UPSTREAM or is_version_id(text):
        return text
    raise RegistryError(
        f"{text[:80]!r} is not a model version: expected {ID_LENGTH} lowercase hex "
        f"characters or {UPSTREAM!r}"
    )


def version_id(model_pb: bytes) -> str:
    """The version id of a model: the sha256 prefix of its ``model.pb`` bytes."""
    return hashlib.sha256(model_pb).hexdigest()[:ID_LENGTH]


def default_root() -> Path:
    """``$FACEMASK_MODEL_STORE``, else ``store/`` in the artifact cache directory."""
    override = os.environ.get(STORE_ENV)
    return Path(override) if override else modelstore.cache_dir() / "store"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the default clock of the store and of rollouts)."""
    return datetime.now(UTC)


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One model: its id, where its files are and its card.

    ``paths`` maps each variant present (``tf``, ``float32``, ``int8``) to its file.
    """

    version: str
    path: Path
    card: dict[str, Any]
    paths: Mapping[str, Path] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """Input width = height in pixels (the card's; the upstream size for a loose file
        without a card, whose runtime reads the real size from the file)."""
        return int(self.card.get("input_size", UPSTREAM_INPUT_SIZE))

    @property
    def variants(self) -> list[str]:
        """Variants this version has files for, in :data:`VARIANT_FILES` order."""
        return [v for v in VARIANT_FILES if v in self.paths]

    @property
    def parent(self) -> str | None:
        """The version this one was trained from (``upstream`` or an id), when known."""
        parent = self.card.get("parent")
        return str(parent) if parent else None

    def file(self, variant: str) -> Path:
        """The file of ``variant`` (``tf``, ``float32``, ``int8``); a clear error when the
        variant is unknown or this version lacks it."""
        if variant not in VARIANT_FILES:
            raise RegistryError(
                f"unknown model variant {variant!r}; known: {', '.join(VARIANT_FILES)}"
            )
        path = self.paths.get(variant)
        if path is None or not path.is_file():
            hint = (
                "run `facemask models build`"
                if self.version == UPSTREAM
                else "it was exported without it"
                if variant != "tf"
                else "the version is incomplete"
            )
            raise RegistryError(f"model {self.version} has no {variant} file ({hint})")
        return path

    def runtime_file(self, runtime: str, variant: str | None = None) -> tuple[Path, str]:
        """The file a runtime loads of this version and its variant: ``tensorflow`` the
        ``tf`` graph; ``tflite`` the ``variant`` asked for, else float32 (int8 when that is
        all the version has). :class:`RegistryError` for another runtime or a missing file."""
        if runtime == "tensorflow":
            return self.file("tf"), "tf"
        if runtime != "tflite":
            raise RegistryError(
                f"the {runtime} runtime cannot load model {self.version}: use tensorflow or tflite"
            )
        wanted = variant or ("int8" if self.variants == ["int8"] else "float32")
        return self.file(wanted), wanted

    def verify(self) -> None:
        """Check every file against the sha256 in the card; :class:`RegistryError` naming
        the first that differs."""
        expected: Mapping[str, str] = self.card.get("files", {})
        for variant, path in self.paths.items():
            want = expected.get(path.name)
            if want is None:
                continue
            if not path.is_file():
                raise RegistryError(f"model {self.version}: {path} ({variant}) is missing")
            got = modelstore.sha256_file(path)
            if got != want:
                raise RegistryError(
                    f"model {self.version}: {path.name} has sha256 {got[:16]}..., its card "
                    f"says {want[:16]}...; the file is corrupt or was changed"
                )


class ModelRegistry:
    """The versions under ``root`` (default :func:`default_root`), plus ``upstream``."""

    def __init__(
        self, root: Path | None = None, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._clock = clock

    # -- reading ---------------------------------------------------------------------------

    def get(self, ref: str | Path) -> ModelVersion:
        """Resolve ``ref``: ``upstream``, a full id, a unique id prefix (>= 6 characters),
        or a path to a version directory, a ``.pb`` or a ``.tflite`` file (a file of a
        version directory: that version with only that file)."""
        if isinstance(ref, Path):
            return self._from_path(ref)
        text = ref.strip()
        if text == UPSTREAM:
            return self.upstream()
        if _PREFIX_RE.fullmatch(text):
            matches = [v for v in self._ids() if v.startswith(text)]
            if len(matches) == 1:
                return self._load(matches[0])
            if len(matches) > 1:
                raise RegistryError(
                    f"model version {text!r} is ambiguous: {', '.join(sorted(matches))}; "
                    "give more characters"
                )
        looks_like_path = os.sep in text or text.endswith((".pb", ".tflite")) or text == "."
        if text and (looks_like_path or Path(text).exists()):
            return self._from_path(Path(text))
        raise RegistryError(
            f"unknown model version {text[:80]!r} in {self.root}; `facemask models list` "
            f"shows the versions (an id, a prefix of >= {MIN_PREFIX} characters, "
            f"{UPSTREAM!r} or a model path)"
        )

    def list(self, *, include_upstream: bool = False) -> list[ModelVersion]:
        """Stored versions, newest first (``upstream`` first when asked for)."""
        versions = [self._load(v) for v in self._ids()]
        versions.sort(key=lambda v: (str(v.card.get("created", "")), v.version), reverse=True)
        return [self.upstream(), *versions] if include_upstream else versions

    def has(self, version: str) -> bool:
        """True when ``version`` (a full id or ``upstream``) is available here."""
        if version == UPSTREAM:
            return True
        return is_version_id(version) and (self.root / version / CARD_FILE).is_file()

    def upstream(self) -> ModelVersion:
        """The pinned upstream model (files from the artifact cache, card from the manifest;
        the TFLite variants are those built by ``facemask models build``, when built)."""
        cache = modelstore.cache_dir()
        paths = {v: cache / name for v, name in UPSTREAM_FILES.items()}
        files: dict[str, str] = {}
        source: dict[str, Any] = {}
        try:
            manifest_raw = json.loads(modelstore.manifest_path().read_text())
            source = dict(manifest_raw.get("upstream", {}))
            files[UPSTREAM_FILES["tf"]] = modelstore.find_artifact(UPSTREAM_FILES["tf"]).sha256
        except (OSError, ValueError, KeyError, modelstore.ModelStoreError) as exc:
            logger.debug("upstream card without the manifest", extra={"error": str(exc)})
        card: dict[str, Any] = {
            "version": UPSTREAM,
            "parent": None,
            "source": source,
            "input_size": UPSTREAM_INPUT_SIZE,
            "files": files,
        }
        return ModelVersion(UPSTREAM, cache, card, paths)

    def blobs(self, version: str) -> dict[str, bytes]:
        """Every file of a stored version and its ``card.json``, by file name (what a
        replica needs to rebuild it with :meth:`add_bytes`)."""
        check_version_id(version)
        if version == UPSTREAM:
            raise RegistryError("the upstream model is not a stored version")
        found = self._load(version)
        found.verify()
        out = {CARD_FILE: (found.path / CARD_FILE).read_bytes()}
        for path in found.paths.values():
            out[path.name] = path.read_bytes()
        return out

    # -- writing ---------------------------------------------------------------------------

    def add(self, files: Mapping[str, Path], card: Mapping[str, Any]) -> ModelVersion:
        """Store a model: ``files`` by variant (``tf``/``float32``/``int8``, as
        ``export_version`` returns them) or by file name (``model.pb``, ...); ``model.pb``
        is required. The card gets ``version``, ``files`` {name: sha256} and ``created``;
        it must say ``input_size``. Adding a model already stored returns it unchanged."""
        named: dict[str, Path] = {}
        for key, given in files.items():
            name = VARIANT_FILES.get(key, key)
            if name not in MODEL_FILES:
                raise RegistryError(
                    f"unknown model file {key!r}; expected one of "
                    f"{', '.join([*VARIANT_FILES, *VARIANT_FILES.values()])}"
                )
            path = Path(given)
            if not path.is_file():
                raise RegistryError(f"model file {path} ({key}) does not exist")
            named[name] = path
        if VARIANT_FILES["tf"] not in named:
            raise RegistryError("a model version needs its model.pb (the id is its sha256)")
        version = version_id(named[VARIANT_FILES["tf"]].read_bytes())
        full_card = self._complete_card(card, version, named)

        def copy(directory: Path, name: str) -> None:
            shutil.copyfile(named[name], directory / name)

        return self._install(version, full_card, copy)

    def add_bytes(self, blobs: Mapping[str, bytes], *, expect: str | None = None) -> ModelVersion:
        """Store a version received as bytes (``card.json`` and the files it lists), after
        checking that its id is ``sha256(model.pb)``, every file matches the card's
        sha256 and nothing else is present; ``expect``: the id it must have."""
        unknown = sorted(set(blobs) - MODEL_FILES - {CARD_FILE})
        if unknown:
            raise RegistryError(f"unexpected files {unknown[:4]} in a model version")
        try:
            card = json.loads(blobs[CARD_FILE])
        except KeyError:
            raise RegistryError("the model version has no card.json") from None
        except ValueError as exc:
            raise RegistryError(f"card.json is not JSON: {exc}") from None
        if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
            raise RegistryError("card.json lists no files")
        pb = blobs.get(VARIANT_FILES["tf"])
        if pb is None:
            raise RegistryError("the model version has no model.pb")
        version = version_id(pb)
        if expect is not None and version != expect:
            raise RegistryError(
                f"model.pb has id {version}, expected {expect}: the files are not that version"
            )
        if card.get("version") != version:
            raise RegistryError(f"card.json names version {card.get('version')!r}, not {version}")
        listed: dict[str, str] = card["files"]
        if set(listed) != set(blobs) - {CARD_FILE}:
            raise RegistryError(
                f"card.json lists {sorted(listed)} but the version holds "
                f"{sorted(set(blobs) - {CARD_FILE})}"
            )
        for name, data in blobs.items():
            if name == CARD_FILE:
                continue
            got = hashlib.sha256(data).hexdigest()
            if got != listed[name]:
                raise RegistryError(
                    f"{name} of model {version} has sha256 {got[:16]}..., its card says "
                    f"{str(listed[name])[:16]}...; refused (corrupt or tampered)"
                )

        def write(directory: Path, name: str) -> None:
            (directory / name).write_bytes(blobs[name])

        return self._install(version, card, write, card_bytes=blobs[CARD_FILE])

    # -- internals -------------------------------------------------------------------------

    def _complete_card(
        self, card: Mapping[str, Any], version: str, named: Mapping[str, Path]
    ) -> dict[str, Any]:
        out = dict(card)
        size = out.get("input_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise RegistryError(f"the card needs input_size (pixels, an integer), got {size!r}")
        parent = out.get("parent")
        if parent is not None and parent != UPSTREAM and not is_version_id(str(parent)):
            raise RegistryError(f"card parent {parent!r} is not {UPSTREAM!r} or a version id")
        out["version"] = version
        out["files"] = {name: modelstore.sha256_file(path) for name, path in sorted(named.items())}
        out["created"] = self._clock().astimezone(UTC).isoformat(timespec="seconds")
        try:
            json.dumps(out)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"the card is not JSON-serialisable: {exc}") from None
        return out

    def _install(
        self,
        version: str,
        card: Mapping[str, Any],
        write: Callable[[Path, str], None],
        *,
        card_bytes: bytes | None = None,
    ) -> ModelVersion:
        final = self.root / version
        if (final / CARD_FILE).is_file():
            logger.info("model version already stored", extra={"version": version})
            return self._load(version)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".part", dir=self.root))
        try:
            for name in card["files"]:
                write(tmp, name)
            text = card_bytes if card_bytes is not None else _card_text(card).encode()
            (tmp / CARD_FILE).write_bytes(text)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; services may run as another user
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / CARD_FILE).is_file():
                    raise  # not a concurrent writer of the same version: a real failure
        except OSError as exc:
            raise RegistryError(f"cannot store model {version} in {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("model version stored", extra={"version": version, "path": str(final)})
        return self._load(version)

    def _ids(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if is_version_id(p.name) and (p / CARD_FILE).is_file()
        )

    def _load(self, version: str) -> ModelVersion:
        return _load_dir(self.root / version, expect=version)

    def _from_path(self, path: Path) -> ModelVersion:
        if path.is_dir():
            if (path / CARD_FILE).is_file():
                return _load_dir(path)
            pb = path / VARIANT_FILES["tf"]
            if not pb.is_file():
                raise RegistryError(f"{path}: neither a model version (card.json) nor model.pb")
            return _loose({v: path / n for v, n in VARIANT_FILES.items() if (path / n).is_file()})
        if not path.is_file():
            raise RegistryError(f"model file {path} does not exist")
        if path.name in MODEL_FILES and (path.parent / CARD_FILE).is_file():
            stored = _load_dir(path.parent)  # that version, narrowed to the file named
            variant = next(v for v, n in VARIANT_FILES.items() if n == path.name)
            return ModelVersion(stored.version, stored.path, stored.card, {variant: path})
        if path.suffix == ".pb":
            return _loose({"tf": path})
        if path.suffix == ".tflite":
            return _loose({"int8" if ".int8." in path.name else "float32": path})
        raise RegistryError(f"{path}: not a model file (.pb or .tflite) or version directory")


def _card_text(card: Mapping[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=True) + "\n"


def _load_dir(directory: Path, *, expect: str | None = None) -> ModelVersion:
    try:
        card = json.loads((directory / CARD_FILE).read_text())
    except OSError as exc:
        raise RegistryError(f"cannot read the card of {directory}: {exc}") from exc
    except ValueError as exc:
        raise RegistryError(f"{directory / CARD_FILE} is not JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise RegistryError(f"{directory / CARD_FILE} is not a JSON object")
    version = str(card.get("version", ""))
    if not is_version_id(version) or (expect is not None and version != expect):
        raise RegistryError(
            f"{directory / CARD_FILE} names version {version[:40]!r}"
            + (f", not {expect}" if expect else "")
        )
    listed = card.get("files", {})
    paths = {v: directory / n for v, n in VARIANT_FILES.items() if n in listed}
    return ModelVersion(version, directory, card, paths)


def _loose(paths: Mapping[str, Path]) -> ModelVersion:
    """A model that is not stored: files without a card; the id is that of its first file
    (``model.pb`` when present)."""
    first = next(iter(paths.values()))
    sha = modelstore.sha256_file(first)
    card = {"version": sha[:ID_LENGTH], "files": {first.name: sha}}
    return ModelVersion(sha[:ID_LENGTH], first.parent, card, dict(paths))
