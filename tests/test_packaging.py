"""The package metadata builds without deprecation warnings (``make setup`` used to print
setuptools' licence deprecation three times: once per build hook)."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

from packaging.requirements import Requirement
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def test_pyproject_applies_without_any_warning() -> None:
    # What every build hook of `pip install -e .` does first; a deprecated field warns here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert dist.metadata.license_expression == "Apache-2.0"


def test_build_requirement_reads_an_spdx_licence_string() -> None:
    # setuptools reads `license = "<SPDX>"` (PEP 639) from 77 on; older ones reject it.
    pyproject = tomllib.loads(PYPROJECT.read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (setuptools,) = (
        Requirement(r) for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")
    )
    assert not setuptools.specifier.contains("76.2")
    assert setuptools.specifier.contains("77.0")
