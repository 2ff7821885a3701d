"""The model watcher's decisions with an injected clock (a real redis-server, a stand-in
detector: no TensorFlow), its supervision, and the ``auto`` runtime's choice for a stored
version (the real model files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra import rollout
from facemask.model import variants as mv
from facemask.model.detector import Detector
from facemask.model.registry import UPSTREAM, ModelRegistry, ModelVersion
from services.inference.config import InferenceSettings
from services.inference.models import (
    LoadedModel,
    ModelLoader,
    ModelWatcher,
    variant_of,
)
from services.inference.service import InferenceService
from tests.fixtures.model import ZeroRuntime
from tests.fixtures.registry import small_card

LAYOUT = StreamLayout("facemask", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def activate(client: redis.Redis, version: str, promoted_at: str) -> None:
    """What a promote does once the files are up: set the key, publish the change."""
    record = rollout.ActiveModel(version, None, promoted_at, "test").to_json()
    client.set(LAYOUT.model_active, record)
    client.publish(LAYOUT.model_events, record)


def test_a_failed_version_is_retried_after_its_back_off_or_when_promoted_again(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    model_registry: ModelRegistry,
    upstream_copy: ModelVersion,
    tmp_path: Path,
) -> None:
    version = upstream_copy.version
    rollout.upload(redis_client, model_registry, version, layout=LAYOUT)
    redis_client.hset(LAYOUT.model_blob(version), "model.pb", b"damaged in Redis")
    activate(redis_client, version, "2026-01-01T00:00:00+00:00")
    settings = InferenceSettings(redis_url=redis_server.url, port=0, metrics_port=0)
    clock, failures, changes = Clock(), [], []
    watcher = ModelWatcher(
        client=redis.Redis.from_url(redis_server.url),
        layout=LAYOUT,
        loader=ModelLoader(settings, ModelRegistry(tmp_path / "replica-store")),
        configured=UPSTREAM,
        poll_interval=1.0,
        retry_interval=160.0,  # back-off 10 s (9..10 with jitter), 20, 40 ... 160
        on_change=lambda loaded, status: changes.append(status),
        on_failure=failures.append,
        clock=clock,
    )
    stand_in = Detector(ZeroRuntime(), model_version="x")  # type: ignore[arg-type]
    watcher.initial(LoadedModel(stand_in, UPSTREAM, owned=False))

    assert not watcher.check()
    assert failures == ["fetch"]
    status = watcher.status
    assert (status.version, status.wanted, status.reason) == (UPSTREAM, version, "fetch")
    assert "refused" in status.error and changes[-1].error == status.error
    assert not watcher.check() and failures == ["fetch"]  # the same promotion: waits
    clock.now += 8.9
    assert not watcher.check() and failures == ["fetch"]
    clock.now += 1.2
    assert not watcher.check() and failures == ["fetch", "fetch"]  # after its back-off
    clock.now += 17.9
    assert not watcher.check() and len(failures) == 2  # the next back-off is longer
    clock.now += 2.2
    assert not watcher.check() and len(failures) == 3
    activate(redis_client, version, "2026-01-01T00:10:00+00:00")  # promoted again: at once
    assert not watcher.check() and len(failures) == 4
    redis_client.delete(LAYOUT.model_active)  # nothing promoted: the configured model
    assert not watcher.check() and len(failures) == 4
    status = watcher.status
    assert (status.version, status.wanted, status.error) == (UPSTREAM, UPSTREAM, "")


@pytest.fixture()
def stand_in_service(redis_server: RedisProcess) -> Iterator[InferenceService]:
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        redis_url=redis_server.url,
        streams=False,
        model_watch=True,
        model_poll_interval=0.05,
        warmup=False,
        watchdog_interval=0.05,
    )
    service = InferenceService(settings, detector=Detector(ZeroRuntime(), model_version="x"))  # type: ignore[arg-type]
    service.start()
    yield service
    service.stop()


def test_the_watcher_runs_supervised_a_death_is_restarted(
    stand_in_service: InferenceService,
) -> None:
    service = stand_in_service
    watcher = service.watcher
    assert watcher is not None and watcher.worker.alive
    assert "model-watcher" in service.supervisor.loops()
    real, calls = watcher.check, []

    def dying() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("watcher killed by the test")
        return real()

    watcher.check = dying  # type: ignore[method-assign]
    restarts = ("facemask_inference_loop_restarts_total", {"loop": "model-watcher"})
    wait_until(lambda: service.registry.get_sample_value(*restarts) == 1, 10, "restarted")
    wait_until(lambda: len(calls) > 1, 10, "checking again")
    assert service.supervisor.verdict is None


@pytest.mark.model
def test_auto_chooses_among_the_versions_own_files(
    upstream_copy: ModelVersion,
    model_registry: ModelRegistry,
    detector: Detector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ``detector`` first: the session's TensorFlow precision is fixed (float32) before auto
    # measures TensorFlow in this process, whatever order the tests run in
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setenv(mv.CACHE_DIR_ENV, str(tmp_path / "variant-cache"))
    settings = InferenceSettings(runtime="auto", max_batch_size=4, warmup=False, threads=1)
    loaded = ModelLoader(settings, model_registry).load(upstream_copy)
    try:
        runtime: Any = loaded.detector.runtime
        choice = runtime.selection
        assert loaded.version == upstream_copy.version
        assert Path(runtime.model_path).parent == upstream_copy.path  # the version's file
        assert choice.variant.key == loaded.variant == variant_of(loaded.detector)
        measured = {m.variant.key for m in choice.measurements}
        # the upstream weights: the accuracy card knows every variant of them
        assert {"tflite-float32", "tflite-int8"} <= measured
    finally:
        loaded.detector.close()
    # measured once per version: a restart (or a swap back) reads the figures
    cached = ModelLoader(settings, model_registry).load(upstream_copy)
    try:
        again: Any = cached.detector.runtime
        assert again.selection.cached and again.selection.variant == choice.variant
        assert (
            tmp_path / "variant-cache" / f"variant-choice.{upstream_copy.version}.json"
        ).is_file()
    finally:
        cached.detector.close()


@pytest.mark.model
def test_auto_takes_the_versions_own_card_over_the_accuracy_card(
    upstream_model_files: dict[str, Path],
    tmp_path: Path,
    detector: Detector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trained version's card scores its own files: an int8 that lost accuracy is never
    chosen, even where the upstream accuracy card (same weights here) would allow it."""
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setenv(mv.CACHE_DIR_ENV, str(tmp_path / "variant-cache"))
    variants = {"tensorflow-float32": 0.68, "tflite-float32": 0.68, "tflite-int8": 0.60}
    registry = ModelRegistry(tmp_path / "store")
    version = registry.add(upstream_model_files, small_card(metrics={"variants": variants}))
    settings = InferenceSettings(runtime="auto", max_batch_size=4, warmup=False, threads=1)
    loaded = ModelLoader(settings, registry).load(version)
    try:
        choice: Any = loaded.detector.runtime.selection  # type: ignore[attr-defined]
        rates = {m.variant.key: m.images_per_second for m in choice.measurements}
        assert choice.variant.key != "tflite-int8"
        # int8 was the fastest: only its accuracy (the version's card) kept it out
        assert rates["tflite-int8"] > rates[choice.variant.key]
    finally:
        loaded.detector.close()


@pytest.mark.parametrize(("model_variant", "file"), [("", "float32"), ("int8", "int8")])
def test_tflite_runs_the_versions_own_tflite_file(
    upstream_copy: ModelVersion, model_registry: ModelRegistry, model_variant: str, file: str
) -> None:
    pytest.importorskip("ai_edge_litert")
    settings = InferenceSettings(runtime="tflite", model_variant=model_variant, warmup=False)
    loaded = ModelLoader(settings, model_registry).load(upstream_copy)
    try:
        runtime: Any = loaded.detector.runtime
        assert Path(runtime.model_path) == upstream_copy.file(file)
        assert loaded.variant == f"tflite-{file}" and loaded.version == upstream_copy.version
    finally:
        loaded.detector.close()
