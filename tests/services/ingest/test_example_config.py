"""``deploy/examples/ingest.toml``: the documented example settings file.

It passes the real validation (``--check-config``) as it is and with every commented-out
setting switched on; it names every setting of the node and every camera key (a setting
added without documentation fails here), each after a comment saying what it does, and
the value a commented-out setting shows is that setting's default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from facemask.infra.settings import setting_default
from services.ingest.__main__ import EXAMPLE_CONFIG, main
from services.ingest.config import CameraConfig, IngestSettings
from tests.fixtures.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / EXAMPLE_CONFIG
COMMENTED_SETTING = re.compile(r"^# ?(?P<key>[a-z_]+) = (?P<value>.+)$")
SETTING = re.compile(r"^(?P<key>[a-z_]+) = ")
NO_STATIC_DEFAULT = {"cameras", "node_name"}
"""Settings whose default is computed (a list to fill, the hostname)."""
CAMERA_COMPUTED_DEFAULT = {"loop"}
"""Camera keys whose default depends on the source kind."""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FACEMASK_"):
            monkeypatch.delenv(name)


def _switched_on(text: str) -> str:
    """The example with every commented-out ``# key = value`` line uncommented."""
    return "\n".join(
        f"{m['key']} = {m['value']}" if (m := COMMENTED_SETTING.match(line)) else line
        for line in text.splitlines()
    )


def _check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(path), "--check-config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert out.endswith("configuration OK\n")
    return out


def test_the_example_passes_check_config_as_a_user_runs_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_")}
    result = subprocess.run(
        [sys.executable, "-m", "facemask", "ingest", "--config", EXAMPLE_CONFIG, "--check-config"],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "camera id=lobby,source=rtsp://user:***@cam1.local:554/stream1" in result.stdout
    assert "password" not in result.stdout


def test_every_setting_switched_on_is_valid_and_covers_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "ingest.toml"
    full.write_text(_switched_on(EXAMPLE.read_text()))
    out = _check_config(full, capsys)
    data: dict[str, Any] = tomllib.loads(full.read_text())
    assert sorted(data) == sorted(IngestSettings.model_fields)
    assert sorted(data["cameras"][0]) == sorted(CameraConfig.KEYS)
    assert sorted(CameraConfig.KEYS) == sorted(CameraConfig.model_fields)
    assert "FACEMASK_INGEST_NODE_NAME=entrance-pi" in out


def test_commented_values_are_the_defaults() -> None:
    in_cameras = False
    checked = 0
    for line in EXAMPLE.read_text().splitlines():
        in_cameras = in_cameras or line.startswith("[[cameras]]")
        match = COMMENTED_SETTING.match(line)
        if not match:
            continue
        key = match["key"]
        value = tomllib.loads(f"v = {match['value']}")["v"]
        if in_cameras:
            if key not in CAMERA_COMPUTED_DEFAULT:
                assert value == CameraConfig.model_fields[key].default, line
                checked += 1
        elif key not in NO_STATIC_DEFAULT:
            assert value == setting_default(IngestSettings, key), line
            checked += 1
    # every setting but the computed ones, and the camera keys but id, source, loop
    assert checked == len(IngestSettings.model_fields) - len(NO_STATIC_DEFAULT) + 4


def test_each_setting_follows_a_comment_that_documents_it() -> None:
    lines = _switched_on(EXAMPLE.read_text()).splitlines()
    for index, line in enumerate(lines):
        if not SETTING.match(line):
            continue
        above = index - 1
        # a group of settings under one comment; a table's comment stands above its header
        while above >= 0 and (SETTING.match(lines[above]) or lines[above] == "[[cameras]]"):
            above -= 1
        assert above >= 0 and re.match(r"^# \S", lines[above]), line
