"""The gRPC API against a real in-process server on a loopback port (real model)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facemask.core.preprocess import decode_image
from facemask.v1 import detector_pb2
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService
from tests.facemask.core.test_preprocess import png_header
from tests.fixtures.inference import health_status

pytestmark = pytest.mark.model


def _service(detector: Any, **overrides: Any) -> InferenceService:
    settings = InferenceSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        streams=False,
        decode_reduce="full",
        **overrides,
    )
    service = InferenceService(settings, detector=detector)
    service.start()
    return service


@pytest.fixture(scope="module")
def service(detector: Any) -> Iterator[InferenceService]:
    svc = _service(detector, max_batch_size=16, max_queue_delay=0.02)
    yield svc
    svc.stop()


def _sample(service: InferenceService, name: str) -> float:
    value = service.registry.get_sample_value(name)
    return float(value or 0.0)


def _request(*blobs: bytes, **kw: Any) -> detector_pb2.DetectRequest:
    return detector_pb2.DetectRequest(
        images=[detector_pb2.Image(data=b, frame_id=str(i)) for i, b in enumerate(blobs)], **kw
    )


def test_detections_equal_local_detector(
    service: InferenceService, detector: Any, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(service.port)
    paths = sorted(samples_dir.iterdir())
    blobs = [p.read_bytes() for p in paths]
    reply = stub.Detect(_request(*blobs), timeout=60)
    assert len(reply.results) == len(paths)
    assert reply.model.version == service.model_version == "upstream"  # the model setting
    assert reply.model.sha256 == detector.model_sha256
    for blob, result in zip(blobs, reply.results, strict=True):
        image = decode_image(blob, reduce="full")
        expected = detector.detect([image.rgb])[0]
        assert (result.width, result.height) == (image.width, image.height)
        assert len(result.detections) == len(expected) > 0
        want_pixels = expected.pixels(image.width, image.height).tolist()
        for i, got in enumerate(result.detections):
            assert got.label_name == expected.labels[i]
            assert got.score == pytest.approx(expected.scores[i], abs=1e-5)
            box = [got.box.x1, got.box.y1, got.box.x2, got.box.y2]
            assert box == want_pixels[i]
            norm = (got.box_normalized.x1, got.box_normalized.y1)
            assert norm == pytest.approx(tuple(expected.xyxy[i, :2]), abs=1e-5)
        assert result.timings.batch_size >= 1
        assert result.timings.compute_seconds > 0


def test_thresholds_per_request(
    service: InferenceService, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(service.port)
    blob = (samples_dir / "demo.png").read_bytes()
    strict = stub.Detect(_request(blob, confidence_threshold=0.99), timeout=30).results[0]
    loose = stub.Detect(_request(blob, confidence_threshold=0.2), timeout=30).results[0]
    assert len(strict.detections) < len(loose.detections)
    assert all(d.score >= 0.99 for d in strict.detections)


def test_concurrent_clients_batch_without_mixing(
    service: InferenceService, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(service.port)
    blobs = {p.name: p.read_bytes() for p in sorted(samples_dir.iterdir())}
    expected = {
        name: [
            (d.label_name, d.box.x1, d.box.y1)
            for d in stub.Detect(_request(b)).results[0].detections
        ]
        for name, b in blobs.items()
    }
    before_count = _sample(service, "facemask_inference_batch_size_count")
    before_sum = _sample(service, "facemask_inference_batch_size_sum")
    errors: list[str] = []
    names = list(blobs)

    def client(index: int) -> None:
        for round_ in range(6):
            name = names[(index + round_) % len(names)]
            result = stub.Detect(_request(blobs[name]), timeout=60).results[0]
            got = [(d.label_name, d.box.x1, d.box.y1) for d in result.detections]
            if got != expected[name]:
                errors.append(f"client {index} round {round_}: {name} got {got}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    batches = _sample(service, "facemask_inference_batch_size_count") - before_count
    images = _sample(service, "facemask_inference_batch_size_sum") - before_sum
    assert images == 72
    assert images / batches > 1.0, "concurrent requests should share model calls"


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [
        (b"", "empty image bytes"),
        (b"\xff\xd8\xff\xe0 this is not really a jpeg", "image 0"),
        (b"GIF89a not an image we take", "image 0"),
        (png_header(30000, 30000), "too_large"),
    ],
    ids=["empty", "corrupt-jpeg", "unsupported", "huge-declared"],
)
def test_bad_images_are_invalid_argument(
    service: InferenceService, grpc_stub_factory: Any, blob: bytes, fragment: str
) -> None:
    stub = grpc_stub_factory(service.port)
    before = _sample_outcomes(service)
    with pytest.raises(grpc.RpcError) as info:
        stub.Detect(_request(blob), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()
    assert _sample_outcomes(service) == before + 1


def _sample_outcomes(service: InferenceService) -> float:
    total = 0.0
    for outcome in ("invalid", "too_large"):
        total += float(
            service.registry.get_sample_value(
                "facemask_inference_requests_total", {"source": "grpc", "outcome": outcome}
            )
            or 0.0
        )
    return total


def test_bad_thresholds_and_empty_request(
    service: InferenceService, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(service.port)
    ok = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    for request in (
        _request(),
        _request(ok, confidence_threshold=1.5),
        _request(ok, iou_threshold=0),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_service_keeps_serving_after_bad_input(
    service: InferenceService, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    stub = grpc_stub_factory(service.port)
    with pytest.raises(grpc.RpcError):
        stub.Detect(_request(b"garbage"), timeout=10)
    good = stub.Detect(_request((samples_dir / "demo2.jpg").read_bytes()), timeout=30)
    assert len(good.results[0].detections) == 1


def test_oversized_message_is_rejected_clearly(detector: Any, grpc_stub_factory: Any) -> None:
    svc = _service(detector, max_message_bytes=1024 * 1024)
    try:
        stub = grpc_stub_factory(svc.port)
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(_request(b"\xff" * (2 * 1024 * 1024)), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
    finally:
        svc.stop()


def test_large_frame_above_default_grpc_limit_is_accepted(
    service: InferenceService, grpc_stub_factory: Any
) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (1400, 1800, 3), dtype=np.uint8)
    blob = cv2.imencode(".png", noise)[1].tobytes()
    assert len(blob) > 4 * 1024 * 1024  # beyond gRPC's 4 MiB default
    reply = grpc_stub_factory(service.port).Detect(_request(blob), timeout=60)
    assert (reply.results[0].width, reply.results[0].height) == (1800, 1400)


def test_deadline_is_honoured(detector: Any, samples_dir: Path, grpc_stub_factory: Any) -> None:
    svc = _service(detector, max_batch_size=1, max_queue_delay=0.0)
    try:
        stub = grpc_stub_factory(svc.port)
        blob = (samples_dir / "face.png").read_bytes()
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(_request(*([blob] * 64)), timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        svc.stop()


def test_queue_full_gives_resource_exhausted(
    detector: Any, samples_dir: Path, grpc_stub_factory: Any
) -> None:
    svc = _service(detector, max_batch_size=1, max_queue_size=2)
    try:
        stub = grpc_stub_factory(svc.port)
        blob = (samples_dir / "face.png").read_bytes()
        # 5 images can never fit in a queue of 2 model inputs: refused before any decode
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(_request(*([blob] * 5)), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue_size" in (info.value.details() or "")
        sample = svc.registry.get_sample_value(
            "facemask_inference_requests_total", {"source": "grpc", "outcome": "too_large"}
        )
        assert sample == 1
        # so can a single image whose tiles outgrow it (2x2: 5 inputs)
        with pytest.raises(grpc.RpcError) as info:
            stub.Detect(_request(blob, tiles="2x2"), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Detect(_request(blob, blob), timeout=30).results  # what fits runs
    finally:
        svc.stop()


def test_health_reflection_and_model_info(
    service: InferenceService, grpc_stub_factory: Any
) -> None:
    assert health_status(service.port) == health_pb2.HealthCheckResponse.SERVING
    assert (
        health_status(service.port, "facemask.v1.Detector")
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert health_status(service.port, "liveness") == health_pb2.HealthCheckResponse.SERVING
    info = grpc_stub_factory(service.port).GetModelInfo(detector_pb2.GetModelInfoRequest())
    assert (info.input_width, info.input_height) == (260, 260)
    assert info.version == info.wanted_version == "upstream" and not info.load_error
    assert info.variant == f"{info.runtime}-{info.precision}"
    # the full sha256 of the loaded model file
    assert len(info.sha256) == 64 and info.sha256 == service.detector.model_sha256
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"facemask.v1.Detector", "grpc.health.v1.Health"} <= names
