"""The architecture gate: layered imports (import-linter contracts in pyproject.toml, run by
``make lint``) and no import cycle anywhere in the project.

The checker itself is tested: a copy of the tree with one deliberate violation of each kind
must fail it, naming the offending import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("facemask", "services", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        # upward: the numeric core reaching into the service infrastructure
        ("facemask/core/anchors.py", "import facemask.infra.settings", "layers"),
        # upward: the model reaching into the wire format
        ("facemask/model/store.py", "import facemask.contracts.wire", "layers"),
        # the library reaching into a service
        ("facemask/infra/log.py", "import services.alerts.engine", "never imports the services"),
        # one service importing another
        ("services/ingest/camera.py", "import services.alerts.rules", "never import each other"),
        # TensorFlow on a Raspberry Pi ingest node
        ("services/ingest/sources.py", "import facemask.model.detector", "without TensorFlow"),
    ],
)
def test_a_violation_fails_the_gate(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}  # deliberate violation\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken
    assert bad_import.rsplit(maxsplit=1)[-1] in broken  # it names the offending import


def test_no_import_cycles() -> None:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == [], f"modules importing each other (directly or through others): {cycles}"
