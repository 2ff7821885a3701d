"""The lock files (``requirements/*.txt``, ``make lock``) that setup, CI and the images
install from: current with ``pyproject.toml``, complete for every target platform, the same
versions everywhere, hash-pinned; and ``scripts/setup.sh`` reinstalls exactly when the lock
changes.

Offline: the lock files are read and their requirements evaluated with ``packaging``;
nothing is resolved or downloaded (``make lock`` does that).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def _load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("facemask_lock", REPO / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lock = _load_lock_script()


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int


def read_pins(path: Path) -> list[Pin]:
    """The pinned requirements of a lock file (``name==version ; marker \\`` + hash lines)."""
    pins = []
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", line))
        requirement = Requirement(re.sub(r"\s*--hash=\S+", "", line))
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        pins.append(
            Pin(
                canonicalize_name(requirement.name),
                Version(spec.version),
                requirement.marker,
                hashes,
            )
        )
    return pins


# Python 3.11 environments the locks serve: CI / developers and the amd64 images, and the
# Raspberry Pi (arm64) images: ingest, and inference (int8 TFLite there, auto runtime).
LINUX_X86_64 = {
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
LINUX_ARM64 = {**LINUX_X86_64, "platform_machine": "aarch64"}
ENVIRONMENTS = {
    "dev": [LINUX_X86_64],
    "inference": [LINUX_X86_64, LINUX_ARM64],
    "alerts": [LINUX_X86_64, LINUX_ARM64],
    "ingest": [LINUX_X86_64, LINUX_ARM64],
}


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements with these extras, self-references (facemask[all]) expanded."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    found = [Requirement(r) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "facemask":
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    build = [Requirement(r) for r in lock.build_requirements()]
    return found + build


def test_every_target_has_a_current_lock() -> None:
    assert [t.name for t in lock.TARGETS] == ["dev", "inference", "alerts", "ingest"]
    assert lock.check() == []
    assert set(ENVIRONMENTS) == {t.name for t in lock.TARGETS}


EVERY_LOCK = {"dev", "inference", "alerts", "ingest"}


@pytest.mark.parametrize(
    ("old", "new", "stale"),
    [
        ("", "", set()),
        ('"redis>=5.0"', '"redis>=5.1"', EVERY_LOCK),
        ('"httpx>=0.27",', '"httpx>=0.27", "rich>=13",', EVERY_LOCK),
        ('"setuptools>=77"', '"setuptools>=78"', EVERY_LOCK),
        ('version = "0.1.0"', 'version = "0.2.0"', set()),
    ],
    ids=["unchanged", "base-dependency", "extra-dependency", "build-requirement", "version-only"],
)
def test_a_dependency_change_makes_the_locks_stale(old: str, new: str, stale: set[str]) -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert old in text
    problems = lock.check(pyproject_text=text.replace(old, new, 1) if old else text)
    assert {re.search(r"requirements/(\w+)\.txt", p).group(1) for p in problems} == stale
    assert all("run `make lock`" in p for p in problems)


@pytest.mark.parametrize("target", [t.name for t in lock.TARGETS])
def test_lock_satisfies_every_requirement_on_its_platforms(target: str) -> None:
    """Every requirement of the target (base, its extras, the build requirements) is pinned
    by a version it accepts, in each environment the lock serves; every pin is hashed."""
    spec = lock.target(target)
    pins = read_pins(spec.path)
    assert pins, spec.path
    assert all(pin.hashes >= 1 for pin in pins), [p.name for p in pins if not p.hashes]
    assert len({p.name for p in pins}) == len(pins), "one pin per package"
    for environment in ENVIRONMENTS[target]:
        active = {p.name: p for p in pins if p.marker is None or p.marker.evaluate(environment)}
        for requirement in _requirements(spec.extras):
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            pin = active.get(canonicalize_name(requirement.name))
            assert pin is not None, (
                f"{target}: {requirement} not pinned for {environment['platform_machine']}"
            )
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{target}: {requirement} but {pin.name}=={pin.version}"
            )


def test_image_locks_pin_the_dev_versions() -> None:
    dev = {p.name: p.version for p in read_pins(lock.target("dev").path)}
    for target in lock.TARGETS[1:]:
        for pin in read_pins(target.path):
            assert dev.get(pin.name) == pin.version, f"{target.name}: {pin.name}=={pin.version}"


def test_ingest_lock_stays_small_for_the_pi() -> None:
    names = {p.name for p in read_pins(lock.target("ingest").path)}
    assert not names & {"tensorflow", "tensorflow-cpu", "grpcio", "keras", "fastapi"}
    assert {"numpy", "opencv-python-headless", "redis", "pydantic"} <= names


def test_this_environment_is_the_locked_one() -> None:
    """The tests run on exactly the dev lock's versions (make test runs setup first)."""
    environment = {
        **LINUX_X86_64,
        "python_full_version": ".".join(map(str, sys.version_info[:3])),
        "platform_machine": os.uname().machine,
    }
    wrong = []
    for pin in read_pins(lock.target("dev").path):
        if pin.marker is not None and not pin.marker.evaluate(environment):
            continue
        try:
            installed = Version(importlib.metadata.version(pin.name))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong.append(f"{pin.name}: installed {installed}, locked {pin.version}")
    assert wrong == [], "run `make setup` (it installs requirements/dev.txt):\n" + "\n".join(wrong)


# --------------------------------------------------------------------------- setup stamp


def _setup_copy(tmp_path: Path) -> Path:
    """A copy of what scripts/setup.sh reads, to change the lock without touching the repo."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for rel in ("scripts/setup.sh", "scripts/lock.py", "pyproject.toml"):
        shutil.copy(REPO / rel, root / rel)
    shutil.copytree(REPO / "requirements", root / "requirements")
    return root


def _setup_check(root: Path, venv: Path) -> int:
    env = {**os.environ, "VENV": str(venv), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(root / "scripts" / "setup.sh"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.returncode


def test_setup_reinstalls_exactly_when_the_lock_changes(tmp_path: Path) -> None:
    """`setup.sh --check` (what the stamp decides: install, or nothing to do) on a copy of
    the repository: this environment's stamp is current; a changed lock, a changed
    pyproject or a missing stamp means reinstall."""
    venv_dir = Path(sys.prefix)
    stamp = venv_dir / ".facemask-setup"
    if not stamp.is_file():
        pytest.fail(f"{venv_dir} was not made by scripts/setup.sh (no stamp): run `make setup`")
    assert _setup_check(REPO, venv_dir) == 0, (
        "this environment is not installed from the current lock: run `make setup`"
    )

    root = _setup_copy(tmp_path)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert _setup_check(root, venv) == 1  # never set up
    shutil.copy(stamp, venv / ".facemask-setup")
    assert _setup_check(root, venv) == 0  # same inputs: nothing to do

    dev_lock = root / "requirements" / "dev.txt"
    original = dev_lock.read_text()
    dev_lock.write_text(original.replace("pytest-timeout==", "pytest-timeout===", 1))
    assert _setup_check(root, venv) == 1  # the lock changed: reinstall
    dev_lock.write_text(original)
    assert _setup_check(root, venv) == 0

    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"redis>=5.0"', '"redis>=5.1"'))
    assert _setup_check(root, venv) == 1  # stale lock: setup refuses before installing
