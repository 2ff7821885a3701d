"""Lock files: every dependency pinned with its hashes, for reproducible installs.

``make lock`` (this script) resolves ``pyproject.toml`` with uv into ``requirements/``:

==============================  ========================================================
``requirements/dev.txt``        base + every extra + the dev tools: ``scripts/setup.sh``,
                                CI (``.ci/run`` -> ``make test``)
``requirements/inference.txt``  base + ``[inference]``: ``services/inference/Dockerfile``
``requirements/alerts.txt``     base + ``[alerts]``: ``services/alerts/Dockerfile``
``requirements/ingest.txt``     base + ``[ingest]``: ``services/ingest/Dockerfile``
==============================  ========================================================

Each is a universal resolution for Python 3.11 (platform differences are environment
markers, such as ``tensorflow-cpu`` on x86_64 and ``tensorflow`` elsewhere, and every
pin lists the hashes of all its wheels), so one file serves linux/amd64 and the arm64
Raspberry Pi alike. The build requirements (``[build-system] requires``) and pip are
pinned too: the images build the project with ``--no-build-isolation`` from them.

``dev.txt`` is resolved first; the image locks are resolved with it as constraints, so a
package has the same version everywhere. uv keeps the versions already in a lock unless
asked: ``make lock ARGS=--upgrade`` (everything) or ``ARGS="--upgrade-package redis"``.

Each lock records the digest of the inputs it was resolved from; ``--check`` (standard
library only, no network: run by ``scripts/setup.sh`` before installing and by
``make lint``) fails when ``pyproject.toml``'s dependencies changed since ``make lock``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = REPO_ROOT / "pyproject.toml"
LOCK_DIR = REPO_ROOT / "requirements"
PYTHON_VERSION = "3.11"
COMPILE_COMMAND = "make lock"
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Target:
    """One lock file: the extras it installs and who installs from it."""

    name: str
    extras: tuple[str, ...]
    used_by: str

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


TARGETS = (
    Target("dev", ("dev",), "scripts/setup.sh and CI (make test): base + every extra + dev tools"),
    Target(
        "inference", ("inference",), "services/inference/Dockerfile (linux/amd64 and linux/arm64)"
    ),
    Target("alerts", ("alerts",), "services/alerts/Dockerfile"),
    Target("ingest", ("ingest",), "services/ingest/Dockerfile (linux/amd64 and linux/arm64)"),
)
"""Resolved in this order: the first one constrains the others."""


class LockError(RuntimeError):
    """A lock file is missing or stale, or uv failed."""


def target(name: str) -> Target:
    """The target called ``name``; raises ``LockError`` naming the known ones."""
    for candidate in TARGETS:
        if candidate.name == name:
            return candidate
    raise LockError(f"no lock {name!r}; known: {', '.join(t.name for t in TARGETS)}")


def build_requirements(pyproject: dict[str, object] | None = None) -> list[str]:
    """What building the project needs (``[build-system] requires``), plus pip."""
    data = pyproject if pyproject is not None else tomllib.loads(PYPROJECT.read_text())
    build_system = data.get("build-system", {})
    assert isinstance(build_system, dict)
    return [*build_system.get("requires", []), "pip"]


def inputs_digest(lock: Target, pyproject_text: str | None = None) -> str:
    """sha256 of everything a lock is resolved from: the Python version, the project's
    dependencies and extras, the build requirements and the target's extras."""
    data = tomllib.loads(pyproject_text if pyproject_text is not None else PYPROJECT.read_text())
    project = data["project"]
    inputs = {
        "python": PYTHON_VERSION,
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build": build_requirements(data),
        "extras": list(lock.extras),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(path: Path) -> str | None:
    """The inputs digest written in a lock file's header (None: no file or no digest)."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX) :].split()[0]
        if line and not line.startswith("#"):
            break
    return None


def check(names: list[str] | None = None, pyproject_text: str | None = None) -> list[str]:
    """Problems of the lock files (``[]``: all present and resolved from the current
    ``pyproject.toml``)."""
    problems = []
    for lock in [target(n) for n in names] if names else list(TARGETS):
        rel = lock.path.relative_to(REPO_ROOT)
        recorded = recorded_digest(lock.path)
        if recorded is None:
            problems.append(f"{rel} is missing or has no '{DIGEST_PREFIX.strip()}' line")
        elif recorded != inputs_digest(lock, pyproject_text):
            problems.append(
                f"{rel} is stale: pyproject.toml's dependencies changed since it was "
                f"resolved; run `{COMPILE_COMMAND}` and commit requirements/"
            )
    return problems


def find_uv() -> str:
    """uv from $UV, next to this interpreter (the dev virtualenv), or on PATH."""
    candidates = [os.environ.get("UV", ""), str(Path(sys.executable).parent / "uv")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("uv")
    if found is None:
        raise LockError("uv not found: `make setup` installs it (dev extra), or pip install uv")
    return found


def _header(lock: Target, digest: str) -> str:
    first = TARGETS[0]
    pinned_by = (
        "the versions already here (ARGS=--upgrade to move them)"
        if lock == first
        else f"requirements/{first.name}.txt, so every version is the same as there"
    )
    return (
        f"# facemask lock '{lock.name}': base + [{', '.join(lock.extras)}], "
        f"for {lock.used_by}.\n"
        f"# Python {PYTHON_VERSION}, every platform (environment markers), hashes of every "
        "wheel; pinned by\n"
        f"# {pinned_by}.\n"
        f"# Generated by `{COMPILE_COMMAND}` (scripts/lock.py): do not edit by hand.\n"
        f"{DIGEST_PREFIX}{digest}\n"
    )


def compile_lock(lock: Target, uv: str, extra_args: list[str]) -> None:
    """Resolve one lock file with uv, then write its header."""
    argv = [
        uv,
        "pip",
        "compile",
        "pyproject.toml",
        "-",  # the build requirements, from stdin
        *[arg for extra in lock.extras for arg in ("--extra", extra)],
        "--universal",
        "--python-version",
        PYTHON_VERSION,
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--output-file",
        str(lock.path.relative_to(REPO_ROOT)),
    ]
    if lock != TARGETS[0]:
        argv += ["--constraint", str(TARGETS[0].path.relative_to(REPO_ROOT))]
    proc = subprocess.run(
        [*argv, *extra_args],
        input="\n".join(build_requirements()) + "\n",
        text=True,
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LockError(f"uv pip compile ({lock.name}) failed:\n{proc.stderr.strip()}")
    body = lock.path.read_text().lstrip("\n")
    lock.path.write_text(_header(lock, inputs_digest(lock)) + body)


def main(argv: list[str] | None = None) -> int:
    """``python scripts/lock.py [--check [NAME ...]] [uv args such as --upgrade]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        nargs="*",
        metavar="NAME",
        help="only check that the lock files (all, or these) match pyproject.toml",
    )
    args, uv_args = parser.parse_known_args(argv)
    try:
        if args.check is not None:
            problems = check(args.check)
            for problem in problems:
                sys.stderr.write(f"lock: {problem}\n")
            return 1 if problems else 0
        uv = find_uv()
        LOCK_DIR.mkdir(exist_ok=True)
        for lock in TARGETS:
            compile_lock(lock, uv, uv_args)
            sys.stderr.write(f"lock: wrote {lock.path.relative_to(REPO_ROOT)}\n")
    except LockError as exc:
        sys.stderr.write(f"lock: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
