"""Tiled inference through the batcher, the stream consumer and gRPC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.core.preprocess import decode_image
from facemask.core.tiling import TileSpec
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.model.detector import Detector
from facemask.v1 import detector_pb2
from services.inference.batcher import DynamicBatcher, Job
from services.inference.config import InferenceSettings
from services.inference.metrics import InferenceMetrics
from services.inference.server import DetectorServicer, GrpcServer
from services.inference.service import InferenceService
from tests.services.inference.test_batcher import BrightnessRuntime, _jpeg

LAYOUT = StreamLayout("facemask", 4)


# -- batcher (fake model) -------------------------------------------------------------


def _batcher(runtime: BrightnessRuntime, **kw: Any) -> DynamicBatcher:
    detector = Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="0")  # type: ignore[arg-type]
    return DynamicBatcher(detector, decode_reduce="full", **kw)


def test_tiled_job_runs_every_window_and_resolves_once() -> None:
    runtime = BrightnessRuntime()
    seen: list[int] = []
    batcher = _batcher(
        runtime, max_batch_size=4, max_queue_delay=0.05, on_batch=lambda n, _: seen.append(n)
    )
    try:
        tiled = batcher.submit(
            Job(data=_jpeg(100, (400, 300)), conf=0.01, iou=0.5, tiles=TileSpec(2, 2))
        )
        plain = batcher.submit(Job(data=_jpeg(200, (400, 300)), conf=0.01, iou=0.5))
        tiled_result, plain_result = tiled.result(10), plain.result(10)
    finally:
        batcher.close()
    assert tiled_result.model_runs == 5 and plain_result.model_runs == 1
    assert sum(runtime.batches) == 6 == sum(seen)  # 5 windows + 1 frame, batched together
    assert max(runtime.batches) <= 4
    assert (tiled_result.width, tiled_result.height) == (400, 300)
    # Every window of the uniform image found the same box (anchor 0); tile boxes near
    # inner borders are dropped, the rest merge by NMS: what is left is frame-normalised.
    assert len(tiled_result.detections)
    assert tiled_result.detections.scores == pytest.approx(100 / 255, abs=1e-4)
    assert plain_result.detections.scores.tolist() == [pytest.approx(200 / 255, abs=1e-4)]


def test_untiled_batcher_results_equal_detector() -> None:
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_batch_size=8)
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    import cv2

    data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    try:
        result = batcher.submit(Job(data=data, conf=0.01, iou=0.5)).result(10)
    finally:
        batcher.close()
    detector = Detector(runtime, conf=0.01, iou=0.5, model_name="fake", model_version="0")  # type: ignore[arg-type]
    assert result.detections == detector.detect([rgb])[0]
    assert len(detector.detect([rgb], tiles=TileSpec(2, 2))[0]) > 0


# -- real model: settings, stream, gRPC ---------------------------------------------


def test_tiles_setting_is_validated_and_resolved() -> None:
    settings = InferenceSettings(tiles={"lobby": "2x2", "street": "3x3:0.25", "*": "off"})
    assert settings.tiles_for("lobby") == TileSpec(2, 2)
    assert settings.tiles_for("street") == TileSpec(3, 3, 0.25)
    assert settings.tiles_for("other") is None
    assert InferenceSettings(tiles={"*": "2x2"}).tiles_for("any") == TileSpec(2, 2)
    assert InferenceSettings().tiles_for("lobby") is None
    with pytest.raises(ValueError, match="lobby"):
        InferenceSettings(tiles={"lobby": "2by2"})


def test_tiles_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEMASK_INFERENCE_TILES", '{"lobby": "2x2", "*": "off"}')
    assert InferenceSettings().tiles_for("lobby") == TileSpec(2, 2)
    monkeypatch.setenv("FACEMASK_INFERENCE_TILES", '{"lobby": "nope"}')
    with pytest.raises(ValueError):
        InferenceSettings()


@pytest.fixture(scope="module")
def jpeg(shared_dir: Path) -> tuple[bytes, int, int]:
    data = (shared_dir / "data" / "samples" / "demo2.jpg").read_bytes()
    return data, 464, 330


@pytest.fixture()
def tiled_stream_service(detector: Any, redis_server: RedisProcess) -> Iterator[InferenceService]:
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        redis_url=redis_server.url,
        stream_partitions=LAYOUT.partitions,
        max_batch_size=8,
        max_frame_age=600.0,
        consumer_name="tiles-test",
        tiles={"lobby": "2x2", "*": "off"},
    )
    svc = InferenceService(settings, detector=detector)
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.model
def test_stream_tiles_one_camera_five_runs_per_frame(
    tiled_stream_service: InferenceService,
    redis_client: redis.Redis,
    jpeg: tuple[bytes, int, int],
    detector: Detector,
) -> None:
    data, width, height = jpeg
    frames = 6
    pipe = redis_client.pipeline()
    for i in range(frames):
        for cam in ("lobby", "street"):
            entry = FrameEntry(cam, i, time.time(), "jpeg", width, height, data)
            pipe.xadd(LAYOUT.frames_for(cam), entry.to_fields())  # type: ignore[arg-type]
    pipe.execute()
    svc = tiled_stream_service

    def entries() -> list[DetectionsEntry]:
        out = []
        for key in LAYOUT.all_detections():
            out.extend(DetectionsEntry.from_fields(f) for _, f in redis_client.xrange(key))
        return out

    wait_until(lambda: len(entries()) >= 2 * frames, 60, "detections of both cameras")
    wait_until(
        lambda: (
            svc.registry.get_sample_value(
                "facemask_frames_processed_total", {"camera_id": "street"}
            )
            == frames
        ),
        10,
        "metrics accounted",
    )
    got = entries()
    runs = {e.camera_id: {x.runs for x in got if x.camera_id == e.camera_id} for e in got}
    assert runs == {"lobby": {5}, "street": {1}}

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return float(svc.registry.get_sample_value(name, labels or {}) or 0.0)

    runs_metric = "facemask_inference_model_runs_total"
    assert sample(runs_metric, {"camera_id": "lobby"}) == 5 * frames
    assert sample(runs_metric, {"camera_id": "street"}) == frames
    # Batch items seen by the model = model runs of the frames (warm-up runs outside).
    assert sample("facemask_inference_batch_size_sum") == 6 * frames
    # The tiled camera's detections include at least what the full frame alone finds
    # (the tiles add candidates; NMS keeps the best), here the sample's one face.
    image = decode_image(data, reduce="full")
    plain = detector.detect([image.rgb])[0]
    street = next(e for e in got if e.camera_id == "street")
    assert street.detections.labels == plain.labels
    lobby = next(e for e in got if e.camera_id == "lobby")
    assert len(lobby.detections) >= len(plain) > 0


@pytest.fixture(scope="module")
def grpc_service(detector: Any) -> Iterator[InferenceService]:
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        streams=False,
        decode_reduce="full",
        max_batch_size=16,
        tiles={"lobby": "2x2"},
    )
    svc = InferenceService(settings, detector=detector)
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.model
def test_grpc_tiles_request_equals_local_tiled_detector(
    grpc_service: InferenceService,
    detector: Detector,
    samples_dir: Path,
    grpc_stub_factory: Any,
) -> None:
    stub = grpc_stub_factory(grpc_service.port)
    blobs = [p.read_bytes() for p in sorted(samples_dir.iterdir())]
    images = [decode_image(b, reduce="full") for b in blobs]
    request = detector_pb2.DetectRequest(
        images=[detector_pb2.Image(data=b) for b in blobs], tiles="2x2"
    )
    reply = stub.Detect(request, timeout=60)
    for image, result in zip(images, reply.results, strict=True):
        expected = detector.detect([image.rgb], tiles=TileSpec(2, 2))[0]
        assert result.timings.model_runs == 5
        assert [d.label_name for d in result.detections] == expected.labels
        want_pixels = expected.pixels(image.width, image.height).tolist()
        for got, score, box in zip(result.detections, expected.scores, want_pixels, strict=True):
            assert got.score == pytest.approx(score, abs=1e-5)
            assert [got.box.x1, got.box.y1, got.box.x2, got.box.y2] == box
    # The camera's setting applies when the request names no tiles; "off" overrides it.
    by_camera = stub.Detect(
        detector_pb2.DetectRequest(images=[detector_pb2.Image(data=blobs[0], camera_id="lobby")]),
        timeout=60,
    )
    assert by_camera.results[0].timings.model_runs == 5
    off = stub.Detect(
        detector_pb2.DetectRequest(
            images=[detector_pb2.Image(data=blobs[0], camera_id="lobby")], tiles="off"
        ),
        timeout=60,
    )
    assert off.results[0].timings.model_runs == 1
    plain = detector.detect([images[0].rgb])[0]
    assert [d.score for d in off.results[0].detections] == pytest.approx(
        plain.scores.tolist(), abs=1e-5
    )


@pytest.mark.model
def test_grpc_bad_tiles_is_invalid_argument(
    grpc_service: InferenceService, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(grpc_service.port)
    blob = sorted(samples_dir.iterdir())[0].read_bytes()
    for bad in ("2by2", "0x3", "2x2:0.9"):
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(
                detector_pb2.DetectRequest(images=[detector_pb2.Image(data=blob)], tiles=bad),
                timeout=30,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tiles" in (info.value.details() or "")


# -- gRPC admission and request validation (fake model, real gRPC server) --------------


@pytest.fixture
def fake_grpc() -> Iterator[tuple[GrpcServer, BrightnessRuntime, InferenceMetrics]]:
    settings = InferenceSettings(
        host="127.0.0.1", port=0, metrics_port=0, streams=False, max_tiles=16,
        max_queue_size=64, max_batch_size=8,
    )  # fmt: skip
    metrics = InferenceMetrics(CollectorRegistry())
    servicer = DetectorServicer(metrics, settings)
    runtime = BrightnessRuntime()
    batcher = _batcher(runtime, max_batch_size=8, max_queue_size=64, max_tiles=16)
    servicer.attach(batcher, detector_pb2.ModelInfo(name="fake"))
    server = GrpcServer(settings, servicer)
    server.start()
    yield server, runtime, metrics
    server.stop(1)
    batcher.close()


def _outcome(metrics: InferenceMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "facemask_inference_requests_total", {"source": "grpc", "outcome": outcome}
    )
    return float(value or 0.0)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff",  # not a protobuf message
        b"\x0a\x10\x0a",  # images field cut short
        b"\x0a\x05\x0a\xff\xff\xff\xff",  # nested length past the end
    ],
)
def test_malformed_protobuf_is_invalid_argument(
    fake_grpc: tuple[GrpcServer, BrightnessRuntime, InferenceMetrics], raw: bytes
) -> None:
    server, runtime, metrics = fake_grpc
    # GetModelInfoRequest has no fields: a well-formed unknown field is valid there
    methods = ["Detect"] + (["GetModelInfo"] if raw == b"\xff\xff\xff" else [])
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for method in methods:
            call = channel.unary_unary(f"/facemask.v1.Detector/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(raw, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed" in (info.value.details() or "")
    assert _outcome(metrics, "invalid") == len(methods)
    assert runtime.batches == []


def test_tile_expansion_beyond_the_queue_is_resource_exhausted_before_any_work(
    fake_grpc: tuple[GrpcServer, BrightnessRuntime, InferenceMetrics], grpc_stub_factory: Any
) -> None:
    server, runtime, metrics = fake_grpc
    stub = grpc_stub_factory(server.port)
    image = detector_pb2.Image(data=_jpeg(80, (400, 300)))
    # 13 images of 4x4 tiles: 13 x 17 = 221 model inputs for a queue of 64
    with pytest.raises(grpc.RpcError) as info:
        stub.Detect(detector_pb2.DetectRequest(images=[image] * 13, tiles="4x4"), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "221 model inputs" in (info.value.details() or "")
    # a grid beyond max_tiles is a bad request, not a queue problem
    with pytest.raises(grpc.RpcError) as info:
        stub.Detect(detector_pb2.DetectRequest(images=[image], tiles="8x8"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_tiles" in (info.value.details() or "")
    assert runtime.batches == []
    assert _outcome(metrics, "too_large") == 1 and _outcome(metrics, "invalid") == 1
    # what fits runs: 3 images x 2x2 = 15 inputs
    reply = stub.Detect(detector_pb2.DetectRequest(images=[image] * 3, tiles="2x2"), timeout=10)
    assert [r.timings.model_runs for r in reply.results] == [5, 5, 5]
    assert sum(runtime.batches) == 15
