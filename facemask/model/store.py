"""Fetch, verify and locate the upstream model artifacts and sample images.

Weights are never committed. ``models/manifest.json`` pins every artifact to a commit of
the upstream repository, with its sha256. :func:`fetch` copies each file from a local
mirror directory when ``FACEMASK_MODEL_MIRROR`` is set (CI and developer machines), else
downloads it from the pinned URL; it always verifies the checksum and writes the cache
atomically (a temporary file renamed into place), so a partial download never becomes a
cached file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
"""The installed ``facemask`` package (its ``data/`` holds the packaged manifest)."""
SOURCE_ROOT = PACKAGE_DIR.parent
MIRROR_ENV = "FACEMASK_MODEL_MIRROR"
CACHE_ENV = "FACEMASK_MODEL_DIR"
MANIFEST_ENV = "FACEMASK_MODEL_MANIFEST"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class ModelStoreError(RuntimeError):
    """A clear, one-line problem with an artifact: what failed and what to do."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """One pinned upstream file."""

    name: str
    group: str
    url: str
    sha256: str
    size: int | None = None
    license: str = ""
    optional: bool = False
    mirror_path: str | None = None


def manifest_path() -> Path:
    """Return the manifest in use (``FACEMASK_MODEL_MANIFEST`` overrides the packaged one)."""
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return Path(override)
    source_copy = SOURCE_ROOT / "models" / "manifest.json"
    if source_copy.is_file():
        return source_copy
    return PACKAGE_DIR / "data" / "manifest.json"


def load_manifest(path: Path | None = None) -> list[Artifact]:
    """Parse the manifest into artifacts."""
    path = path or manifest_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"cannot read model manifest {path}: {exc}") from exc
    return [
        Artifact(
            name=a["name"],
            group=a.get("group", "model"),
            url=a["url"],
            sha256=a["sha256"].lower(),
            size=a.get("bytes"),
            license=a.get("license", ""),
            optional=bool(a.get("optional", False)),
            mirror_path=a.get("mirror_path"),
        )
        for a in raw["artifacts"]
    ]


def cache_dir() -> Path:
    """Directory holding verified artifacts (git-ignored ``models/cache`` in a checkout)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    if (SOURCE_ROOT / "models" / "manifest.json").is_file():
        return SOURCE_ROOT / "models" / "cache"
    return Path.home() / ".cache" / "facemask" / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def find_artifact(name: str, artifacts: Iterable[Artifact] | None = None) -> Artifact:
    """Look an artifact up by file name."""
    for artifact in artifacts if artifacts is not None else load_manifest():
        if artifact.name == name:
            return artifact
    raise ModelStoreError(f"{name}: not in the model manifest {manifest_path()}")


def artifact_path(name: str, *, verify: bool = False) -> Path:
    """Path of a cached artifact; raises a clear error when it has not been fetched."""
    path = cache_dir() / name
    if not path.is_file():
        raise ModelStoreError(
            f"{name}: not found in {cache_dir()}; run `facemask models fetch` "
            f"(set {MIRROR_ENV}=DIR to copy from a local mirror)"
        )
    if verify:
        expected = find_artifact(name).sha256
        actual = sha256_file(path)
        if actual != expected:
            raise ModelStoreError(
                f"{name}: cached file {path} has sha256 {actual}, expected {expected}; "
                "delete it and run `facemask models fetch`"
            )
    return path


def _mirror_dirs() -> list[Path]:
    value = os.environ.get(MIRROR_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def _mirror_candidates(artifact: Artifact, mirrors: list[Path]) -> list[Path]:
    found = []
    for mirror in mirrors:
        found.append(mirror / artifact.name)
        if artifact.mirror_path:
            found.append(mirror / artifact.mirror_path)
    return found


def _copy_verified(src_open: object, artifact: Artifact, dest: Path, origin: str) -> None:
    """Stream ``src_open`` (a binary file-like) to ``dest`` via a temp file, verifying sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{artifact.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src_open.read(_CHUNK):  # type: ignore[attr-defined]
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != artifact.sha256:
            raise ModelStoreError(
                f"{artifact.name}: sha256 mismatch from {origin} (got {actual}, expected "
                f"{artifact.sha256}); the file is corrupt or not the pinned upstream version, "
                "nothing was cached"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; services may run as another user
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_artifact(artifact: Artifact, *, force: bool = False) -> Path:
    """Make one artifact present and verified in the cache; return its path."""
    dest = cache_dir() / artifact.name
    if dest.is_file() and not force:
        if sha256_file(dest) == artifact.sha256:
            return dest
        logger.warning("cached %s fails its checksum; fetching it again", artifact.name)
    mirrors = _mirror_dirs()
    if mirrors:
        for candidate in _mirror_candidates(artifact, mirrors):
            if candidate.is_file():
                with candidate.open("rb") as fh:
                    _copy_verified(fh, artifact, dest, str(candidate))
                logger.info("copied %s from mirror %s", artifact.name, candidate)
                return dest
        raise ModelStoreError(
            f"{artifact.name}: not in mirror {os.pathsep.join(map(str, mirrors))} "
            f"({MIRROR_ENV}); put the file there or unset {MIRROR_ENV} to download "
            f"{artifact.url}"
        )
    try:
        request = urllib.request.Request(artifact.url, headers={"User-Agent": "facemask"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            _copy_verified(response, artifact, dest, artifact.url)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        if isinstance(exc, ModelStoreError):
            raise
        raise ModelStoreError(
            f"{artifact.name}: download from {artifact.url} failed ({exc}); check the "
            f"network or set {MIRROR_ENV}=DIR to a directory holding the file"
        ) from exc
    logger.info("downloaded %s", artifact.name)
    return dest


def fetch(
    groups: Iterable[str] = ("model", "samples"),
    *,
    include_optional: bool = False,
    force: bool = False,
) -> list[Path]:
    """Fetch every required artifact of the given groups; return their cached paths."""
    wanted = set(groups)
    paths = []
    for artifact in load_manifest():
        if artifact.group not in wanted or (artifact.optional and not include_optional):
            continue
        paths.append(fetch_artifact(artifact, force=force))
    return paths


def sample_images() -> list[Path]:
    """Cached upstream sample images (fetched like the model)."""
    return [artifact_path(a.name) for a in load_manifest() if a.group == "samples"]
