"""Configuration: --camera specs, env JSON, config files, clear errors at start."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from facemask.infra.settings import ConfigError
from services.ingest.__main__ import configure, overrides_from_args, run
from services.ingest.config import (
    DEFAULT_BUFFER_FRAMES,
    DEFAULT_STREAM_MAXLEN,
    IngestSettings,
    parse_camera_spec,
    read_config_file,
)
from tests.fixtures.paths import REPO_ROOT


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FACEMASK_"):
            monkeypatch.delenv(name)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def test_camera_spec_parsing_keeps_urls_whole() -> None:
    spec = parse_camera_spec("id=lobby,source=rtsp://u:p@cam/s?a=1,b=2,fps=2.5,location=Hall A")
    assert spec == {
        "id": "lobby",
        "source": "rtsp://u:p@cam/s?a=1,b=2",
        "fps": "2.5",
        "location": "Hall A",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("id=a,source=0,fsp=5", "unknown key 'fsp'"),
        ("source=0", "id= is required"),
        ("id=a", "source= is required"),
        ("id=a,id=b,source=0", "given twice"),
        ("garbage", "expected key=value"),
    ],
)
def test_bad_camera_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_camera_spec(spec)


def test_defaults_and_typed_values(samples: Path) -> None:
    settings = IngestSettings.load(
        cameras=[f"id=demo,source={samples},fps=2,max_side=320,quality=70,name=Demo"]
    )
    camera = settings.cameras[0]
    assert (camera.fps, camera.max_side, camera.quality, camera.display_name) == (
        2.0,
        320,
        70,
        "Demo",
    )
    assert camera.spec.kind == "images" and camera.loops is True
    assert settings.stream_maxlen == DEFAULT_STREAM_MAXLEN
    assert settings.buffer_frames == DEFAULT_BUFFER_FRAMES
    assert settings.voice_enabled is False
    default = IngestSettings.load(cameras=["id=cam,source=0"]).cameras[0]
    assert (default.fps, default.quality, default.max_side) == (5.0, 80, 0)


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ("id=a,source=0,fps=0", r"camera 'a': fps: Input should be greater than 0"),
        ("id=a,source=0,fps=-1", r"fps: Input should be greater than 0"),
        ("id=a,source=0,quality=101", r"quality: Input should be less than or equal to 100"),
        ("id=a,source=0,max_side=8", r"max_side must be 0"),
        ("id=a,source=/no/such/clip.mp4", r"'/no/such/clip.mp4': no such file or directory"),
        ("id=a,source=ftp://host/x", r"unsupported URL scheme 'ftp'"),
        ("id=a,source=rtsp://", r"URL without a host"),
        ("id=a,source=-1", r"device index -1 must be >= 0"),
        ("id=a,source=0,loop=maybe", r"loop: Input should be a valid boolean"),
        ("id=a b,source=0", r"camera 'a b': id: camera id 'a b' may only hold ASCII letters"),
        ("id=a/b,source=0", r"camera 'a/b': id: camera id 'a/b' may only hold ASCII letters"),
        ("id=_x,source=0", r"camera '_x': id: camera id '_x' must start with an ASCII letter"),
        ("id=caf\u00e9,source=0", r"may only hold ASCII letters, digits, '\.', '_' and '-'"),
        (f"id={'c' * 65},source=0", r"is longer than 64 characters"),
    ],
)
def test_bad_camera_values_fail_clearly(camera: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        IngestSettings.load(cameras=[camera])
    assert "FACEMASK_INGEST_CAMERAS" in str(info.value)


def test_settings_level_errors() -> None:
    with pytest.raises(ConfigError, match="no camera configured"):
        IngestSettings.load()
    with pytest.raises(ConfigError, match="configured twice"):
        IngestSettings.load(cameras=["id=a,source=0", "id=a,source=1"])
    with pytest.raises(ConfigError, match="must exceed heartbeat_interval"):
        IngestSettings.load(cameras=["id=a,source=0"], camera_ttl=5, heartbeat_interval=5)
    with pytest.raises(ConfigError, match="voice_command"):
        IngestSettings.load(cameras=["id=a,source=0"], voice_command="aplay 'unclosed")
    with pytest.raises(ConfigError, match="STREAM_MAXLEN"):
        IngestSettings.load(cameras=["id=a,source=0"], stream_maxlen=0)


def test_environment(monkeypatch: pytest.MonkeyPatch, samples: Path) -> None:
    monkeypatch.setenv(
        "FACEMASK_INGEST_CAMERAS",
        json.dumps([{"id": "lobby", "source": "0", "fps": 3}, f"id=demo,source={samples}"]),
    )
    monkeypatch.setenv("FACEMASK_REDIS_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("FACEMASK_INGEST_STREAM_MAXLEN", "500")
    settings = IngestSettings.load()
    assert [c.id for c in settings.cameras] == ["lobby", "demo"]
    assert settings.cameras[0].fps == 3
    assert settings.redis_url == "redis://10.0.0.1:6379/0"
    assert settings.stream_maxlen == 500
    monkeypatch.setenv("FACEMASK_INGEST_CAMERAS", '[{"id": "x"')
    with pytest.raises(ConfigError, match="FACEMASK_INGEST_CAMERAS: expected JSON") as info:
        IngestSettings.load()
    assert "e.g. FACEMASK_INGEST_CAMERAS='[{" in str(info.value)
    monkeypatch.setenv("FACEMASK_INGEST_CAMERAS", '[{"id": "x", "source": "0", "speed": 1}]')
    with pytest.raises(ConfigError, match="speed: unknown key"):
        IngestSettings.load()
    monkeypatch.setenv("FACEMASK_INGEST_CAMERAS", '[{"id": "x", "source": "0"}]')
    monkeypatch.setenv("FACEMASK_INGEST_FPS", "3")
    with pytest.raises(ConfigError, match=r"unknown setting.*FACEMASK_INGEST_FPS"):
        IngestSettings.load()


def test_config_files_and_precedence(tmp_path: Path, samples: Path) -> None:
    toml = tmp_path / "ingest.toml"
    toml.write_text(
        'redis_url = "redis://127.0.0.1:1/0"\nstream_maxlen = 300\n'
        f'[[cameras]]\nid = "door"\nsource = "{samples}"\nfps = 2\n',
        encoding="utf-8",
    )
    values = overrides_from_args(parse(["--config", str(toml)]))
    settings = IngestSettings.load(**values)
    assert settings.stream_maxlen == 300 and settings.cameras[0].id == "door"
    # The command line wins over the file.
    args = parse(["--config", str(toml), "--camera", "id=cli,source=1", "--redis-url", "redis://h"])
    settings = IngestSettings.load(**overrides_from_args(args))
    assert [c.id for c in settings.cameras] == ["cli"] and settings.redis_url == "redis://h"
    assert settings.stream_maxlen == 300

    js = tmp_path / "ingest.json"
    js.write_text(json.dumps({"cameras": ["id=a,source=0"], "stream_maxln": 5}))
    with pytest.raises(ConfigError, match=r"unknown setting.*stream_maxln"):
        read_config_file(js)
    js.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_config_file(js)
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_file(tmp_path / "missing.json")


def test_check_config_in_process(capsys: pytest.CaptureFixture[str], samples: Path) -> None:
    args = parse(["--check-config", "--camera", "id=cam,source=rtsp://user:secret@h/s,fps=2"])
    with pytest.raises(SystemExit) as ok:
        run(args)
    assert ok.value.code == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out and "id=cam,source=rtsp://user:***@h/s,fps=2" in out
    assert "secret" not in out
    assert run(parse(["--camera", "id=cam,source=0,fps=0"])) == 2
    assert "camera 'cam': fps" in capsys.readouterr().err


def test_cli_rejects_bad_config_at_start(tmp_path: Path) -> None:
    """The real entry point: a clear one-line message and exit code 2, no traceback."""
    for spec, message in (
        ("id=a,source=0,fps=0", "fps: Input should be greater than 0"),
        ("id=a,source=0,colour=red", "unknown key 'colour'"),
        ("id=a,source=gopher://x", "unsupported URL scheme 'gopher'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "services.ingest", "--camera", spec],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "FACEMASK_INGEST_REDIS_URL": "redis://127.0.0.1:1/0"},
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
