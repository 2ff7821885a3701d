"""Model fetch: mirror first, sha256 always verified, atomic cache, clear errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from facemask.model import store as modelstore
from tests.fixtures.paths import REPO_ROOT

PAYLOAD = b"not really weights, but bytes with a known checksum\n" * 100


def _manifest(tmp: Path, url: str = "http://127.0.0.1:9/x.bin", sha: str | None = None) -> Path:
    path = tmp / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "artifacts": [
                    {
                        "name": "x.bin",
                        "group": "model",
                        "url": url,
                        "sha256": sha or hashlib.sha256(PAYLOAD).hexdigest(),
                        "bytes": len(PAYLOAD),
                    },
                    {
                        "name": "extra.bin",
                        "group": "model",
                        "optional": True,
                        "url": url,
                        "sha256": "0" * 64,
                    },
                ]
            }
        )
    )
    return path


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated manifest + cache; returns the cache dir."""
    monkeypatch.setenv(modelstore.MANIFEST_ENV, str(_manifest(tmp_path)))
    monkeypatch.setenv(modelstore.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(modelstore.MIRROR_ENV, raising=False)
    return tmp_path / "cache"


def test_repository_manifest_pins_upstream_commit_and_sha256() -> None:
    artifacts = modelstore.load_manifest(REPO_ROOT / "models" / "manifest.json")
    names = {a.name for a in artifacts}
    assert {"face_mask_detection.pb", "face_mask_detection.tflite"} <= names
    for artifact in artifacts:
        assert "256dc65f726cb78d82936b2c61c55a5adc2cf05d" in artifact.url
        assert len(artifact.sha256) == 64
    pb = modelstore.find_artifact("face_mask_detection.pb", artifacts)
    assert pb.sha256 == "6a2072385eb0ff786af61743e60469f24ac12ba15507d15eccf6e35f17dbb239"


def test_shared_mirror_matches_manifest(shared_dir: Path) -> None:
    for artifact in modelstore.load_manifest(REPO_ROOT / "models" / "manifest.json"):
        if artifact.group != "model":
            continue
        path = shared_dir / "models" / artifact.name
        assert modelstore.sha256_file(path) == artifact.sha256, artifact.name


def test_fetch_from_mirror(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv(modelstore.MIRROR_ENV, str(mirror))
    paths = modelstore.fetch()
    assert paths == [store / "x.bin"]
    assert (store / "x.bin").read_bytes() == PAYLOAD
    assert modelstore.artifact_path("x.bin", verify=True) == store / "x.bin"
    # idempotent: a second fetch keeps the verified file
    assert modelstore.fetch() == paths
    assert not list(store.glob("*.part"))


def test_bad_checksum_in_mirror_caches_nothing(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.bin").write_bytes(PAYLOAD + b"tampered")
    monkeypatch.setenv(modelstore.MIRROR_ENV, str(mirror))
    with pytest.raises(modelstore.ModelStoreError) as info:
        modelstore.fetch()
    message = str(info.value)
    assert "x.bin" in message and "sha256 mismatch" in message and "nothing was cached" in message
    assert not (store / "x.bin").exists()
    assert not list(store.glob("*x.bin*"))


def test_missing_mirror_file_names_file_and_fix(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(modelstore.MIRROR_ENV, str(tmp_path / "empty"))
    with pytest.raises(modelstore.ModelStoreError) as info:
        modelstore.fetch()
    assert "x.bin: not in mirror" in str(info.value)
    assert modelstore.MIRROR_ENV in str(info.value)


def test_no_network_is_one_clear_error(store: Path) -> None:
    with pytest.raises(modelstore.ModelStoreError) as info:
        modelstore.fetch()
    assert "x.bin: download from http://127.0.0.1:9/x.bin failed" in str(info.value)


def test_corrupted_cache_is_fetched_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv(modelstore.MIRROR_ENV, str(mirror))
    modelstore.fetch()
    (store / "x.bin").write_bytes(b"bit rot")
    with pytest.raises(modelstore.ModelStoreError):
        modelstore.artifact_path("x.bin", verify=True)
    modelstore.fetch()
    assert (store / "x.bin").read_bytes() == PAYLOAD


def test_missing_artifact_error_says_what_to_run(store: Path) -> None:
    with pytest.raises(modelstore.ModelStoreError) as info:
        modelstore.artifact_path("x.bin")
    assert "facemask models fetch" in str(info.value)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = PAYLOAD
    truncate = False

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: len(self.body) // 2] if self.truncate else self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Handler.truncate = False


def test_download_verifies_and_partial_download_never_cached(
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    http_server: http.server.HTTPServer,
) -> None:
    url = f"http://127.0.0.1:{http_server.server_address[1]}/x.bin"
    monkeypatch.setenv(modelstore.MANIFEST_ENV, str(_manifest(tmp_path, url)))
    _Handler.truncate = True
    with pytest.raises(modelstore.ModelStoreError):
        modelstore.fetch()
    assert not (store / "x.bin").exists()
    assert not list(store.glob("*.part"))
    _Handler.truncate = False
    assert modelstore.fetch() == [store / "x.bin"]
    assert (store / "x.bin").read_bytes() == PAYLOAD


def test_cli_fetch_error_is_one_line_and_nonzero(store: Path, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        modelstore.MANIFEST_ENV: str(tmp_path / "manifest.json"),
        modelstore.CACHE_ENV: str(store),
        modelstore.MIRROR_ENV: str(tmp_path / "nowhere"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "facemask.cli", "models", "fetch"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "x.bin" in errors[0]
    assert "Traceback" not in result.stderr
