"""``facemask models list|show|promote|rollback|active|artifacts`` and ``--model`` of
``detect`` / ``eval``: a store in a temporary directory, a real redis-server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from facemask import cli
from facemask.cli import runtime_args
from facemask.cli.detect import make_backend
from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess
from facemask.infra import rollout
from facemask.model import registry as reg
from facemask.model import store as modelstore
from facemask.model.registry import ModelRegistry, ModelVersion
from tests.fixtures.paths import require_module
from tests.fixtures.registry import small_card


@pytest.fixture()
def store(model_registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """``model_registry`` as the CLI's default store (``FACEMASK_MODEL_STORE``)."""
    monkeypatch.setenv(reg.STORE_ENV, str(model_registry.root))
    monkeypatch.delenv("FACEMASK_REDIS_URL", raising=False)
    monkeypatch.delenv("FACEMASK_STREAM_PREFIX", raising=False)
    return model_registry


@pytest.fixture()
def facemask(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``facemask ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _trained(tmp_path: Path, registry: ModelRegistry, tag: str, ap50: float) -> ModelVersion:
    pb = tmp_path / f"{tag}.pb"
    pb.write_bytes(f"graph {tag}".encode())
    return registry.add({"tf": pb}, small_card(metrics={"dev": {"ap50": ap50}}))


def test_list_shows_upstream_and_the_versions_newest_first(
    tmp_path: Path, store: ModelRegistry, facemask: Any
) -> None:
    version = _trained(tmp_path, store, "a", 0.6681)
    code, out, _ = facemask("models", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "PARENT", "INPUT", "AP50", "CREATED", "FILES"]
    assert lines[1].split()[0] == "upstream"
    assert lines[2].split() == [
        version.version,
        "upstream",
        "260",
        "0.668",
        "2026-01-02T03:04:05+00:00",
        "tf",
    ]
    assert lines[-1] == f"store: {store.root}"
    code, out, _ = facemask("models", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["version"] for r in rows] == ["upstream", version.version]
    assert rows[1]["ap50"] == 0.6681 and rows[1]["variants"] == ["tf"] and not rows[1]["active"]


def test_promote_rollback_and_active_through_the_cli(
    tmp_path: Path,
    store: ModelRegistry,
    facemask: Any,
    redis_server: RedisProcess,
    redis_client: redis.Redis,
) -> None:
    first = _trained(tmp_path, store, "b", 0.6)
    second = _trained(tmp_path, store, "c", 0.7)
    url = ("--redis-url", redis_server.url)
    code, out, err = facemask("models", "promote", first.version[:7], "--by", "ops", *url)
    assert code == 0, err
    assert json.loads(out) == {
        "version": first.version,
        "previous": None,
        "promoted_at": json.loads(out)["promoted_at"],
        "by": "ops",
    }
    code, out, err = facemask("models", "rollback", *url)
    assert code == 1 and out == ""
    assert err.startswith("facemask models rollback: error: nothing to roll back to")
    assert facemask("models", "promote", second.version, *url)[0] == 0
    code, out, _ = facemask("models", "list", "--json", *url)
    active = [json.loads(line)["version"] for line in out.splitlines() if '"active": true' in line]
    assert active == [second.version]
    code, out, _ = facemask("models", "rollback", *url)
    assert code == 0 and json.loads(out)["version"] == first.version
    assert json.loads(facemask("models", "active", *url)[1])["previous"] == second.version
    assert rollout.active(redis_client) is not None
    assert rollout.active(redis_client).version == first.version  # type: ignore[union-attr]


def test_the_stream_prefix_isolates_deployments(
    tmp_path: Path,
    store: ModelRegistry,
    facemask: Any,
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = _trained(tmp_path, store, "d", 0.6)
    monkeypatch.setenv("FACEMASK_REDIS_URL", redis_server.url)
    monkeypatch.setenv("FACEMASK_STREAM_PREFIX", "site1")
    assert facemask("models", "promote", version.version)[0] == 0
    assert rollout.active(redis_client) is None
    assert rollout.active(redis_client, layout=StreamLayout("site1")) is not None
    assert facemask("models", "active", "--stream-prefix", "facemask")[1] == ""


def test_errors_are_one_clear_line(
    tmp_path: Path, store: ModelRegistry, facemask: Any, redis_server: RedisProcess
) -> None:
    code, _, err = facemask(
        "models", "promote", "0123456789abcdef", "--redis-url", redis_server.url
    )
    assert code == 1 and err.startswith("facemask models promote: error: unknown model version")
    secret = "redis://:hunter2secret@127.0.0.1:1/0"
    version = _trained(tmp_path, store, "e", 0.6)
    code, _, err = facemask("models", "promote", version.version, "--redis-url", secret)
    assert code == 1 and "facemask models promote: error: Redis at" in err
    assert "hunter2secret" not in err and len(err.splitlines()) == 1
    code, _, err = facemask("models", "show", "nope")
    assert code == 1 and "unknown model version 'nope'" in err


def test_show_prints_the_card_and_verifies(
    tmp_path: Path, store: ModelRegistry, facemask: Any
) -> None:
    version = _trained(tmp_path, store, "f", 0.6)
    code, out, _ = facemask("models", "show", version.version[:6], "--verify")
    shown = json.loads(out)
    assert code == 0 and shown["verified"] is True
    assert shown["card"] == version.card and shown["files"] == {"tf": str(version.file("tf"))}
    version.file("tf").write_bytes(b"changed")
    code, out, err = facemask("models", "show", version.version, "--verify")
    assert code == 1 and out == "" and "model.pb has sha256" in err


def test_artifacts_lists_the_pinned_files(facemask: Any) -> None:
    code, out, _ = facemask("models", "artifacts")
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert code == 0 and names == [a.name for a in modelstore.load_manifest()]


# -- --model of detect / eval --------------------------------------------------------------


def _args(**values: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runtime_args.add_runtime_arguments(parser)
    argv = [f"--{k}={v}" for k, v in values.items()]
    return parser.parse_args(argv)


def test_model_resolves_to_the_file_of_the_runtimes_variant(
    store: ModelRegistry, upstream_copy: ModelVersion
) -> None:
    vid = upstream_copy.version
    assert runtime_args.runtime_options(_args(model=vid[:8])) == {
        "model_path": upstream_copy.file("tf")
    }
    assert runtime_args.runtime_options(_args(model=vid, runtime="tflite")) == {
        "model_path": upstream_copy.file("float32"),
        "variant": "float32",
    }
    assert runtime_args.runtime_options(
        _args(model=str(upstream_copy.path), runtime="tflite", variant="int8", threads=2)
    ) == {"threads": 2, "model_path": upstream_copy.file("int8"), "variant": "int8"}
    assert runtime_args.runtime_options(_args(model="upstream", runtime="tflite")) == {}
    loose = upstream_copy.file("int8")
    assert runtime_args.runtime_options(_args(model=str(loose), runtime="tflite"))["variant"] == (
        "int8"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "nope"}, "unknown model version"),
        ({"runtime": "auto"}, "needs --runtime tensorflow or tflite"),
        ({"runtime": "tflite", "variant": "upstream"}, "--variant upstream is the upstream"),
    ],
)
def test_model_misuse_is_a_clear_error(
    store: ModelRegistry, upstream_copy: ModelVersion, values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        runtime_args.runtime_options(_args(**{"model": upstream_copy.version, **values}))


def test_a_missing_variant_file_is_a_clear_error(tmp_path: Path, store: ModelRegistry) -> None:
    version = _trained(tmp_path, store, "g", 0.6)
    with pytest.raises(ValueError, match="has no float32 file"):
        runtime_args.runtime_options(_args(model=version.version, runtime="tflite"))


def test_detect_with_a_stored_version_loads_its_file(
    store: ModelRegistry, upstream_copy: ModelVersion, samples_dir: Path, facemask: Any
) -> None:
    require_module("ai_edge_litert")
    version = ("--model", upstream_copy.version, "--runtime", "tflite", "--variant", "int8")
    parser = cli.build_parser()
    backend = make_backend(parser.parse_args(["detect", *version, "x.jpg"]))
    try:
        assert backend.detector.model_sha256 == upstream_copy.card["files"]["model.int8.tflite"]
    finally:
        backend.close()
    image = str(samples_dir / "demo2.jpg")
    code, out, err = facemask("detect", "--no-progress", *version, image)
    assert code == 0, err
    code, same, _ = facemask(
        "detect", "--no-progress", "--runtime", "tflite", "--variant", "int8", image
    )
    assert json.loads(out)["detections"] and json.loads(out) == json.loads(same)


def test_detect_and_eval_refuse_a_bad_model_before_loading(
    tmp_path: Path, store: ModelRegistry, facemask: Any, samples_dir: Path
) -> None:
    image = str(samples_dir / "demo2.jpg")
    code, _, err = facemask("detect", "--no-progress", "--model", "nope", image)
    assert code == 2 and "unknown model version 'nope'" in err
    code, _, err = facemask(
        "detect", "--no-progress", "--model", "upstream", "--server", "127.0.0.1:1", image
    )
    assert code == 2 and "--model chooses a local model" in err
    annotations = tmp_path / "a.json"
    (tmp_path / "x.jpg").write_bytes(b"not decoded before the model is chosen")
    coco = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 4, "height": 4}],
        "annotations": [],
        "categories": [{"id": 1, "name": "mask"}, {"id": 2, "name": "no_mask"}],
    }
    annotations.write_text(json.dumps(coco))
    code, _, err = facemask(
        "eval", "--annotations", str(annotations), "--images", str(tmp_path), "--model", "nope"
    )
    assert code == 1 and "unknown model version 'nope'" in err
