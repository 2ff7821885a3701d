"""Bad input, property-based (hypothesis): random and truncated bytes into the stream entry
parsers and the gRPC API, random bytes as JPEG, a 20000x20000 declared frame, camera ids
with control characters or 10 kB long. Each gets a clear error (``WireError`` with a
reason, gRPC ``INVALID_ARGUMENT``) or a dead-letter entry, and the services keep working."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry, WireError
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until
from facemask.infra.settings import ConfigError
from facemask.v1 import detector_pb2
from services.inference.config import InferenceSettings
from services.inference.service import InferenceService
from services.ingest.config import IngestSettings

LAYOUT = StreamLayout()
FIELD_NAMES = ["v", "camera", "frame", "ts", "enc", "w", "h", "data", "node"]
DET_FIELDS = ["v", "camera", "frame", "frame_sid", "ts", "t_done", "status", "reason"]
DET_FIELDS += ["w", "h", "model", "dets", "runs"]
BAD_CAMERA_IDS = ["cam\x00one", "cam\nx", "tab\tcam", "bell\x07", "x" * 10_000, "", " "]


def valid_frame_fields(data: bytes = b"\xff\xd8\xff\xe0jpeg") -> dict[bytes, bytes]:
    entry = FrameEntry("cam-1", 7, 1700000000.5, "jpeg", 640, 480, data, node="n1")
    return {
        k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in entry.to_fields().items()
    }


def valid_detections_fields() -> dict[bytes, bytes]:
    fields = {
        "v": "1",
        "camera": "cam-1",
        "frame": "7",
        "frame_sid": "1700000000000-0",
        "ts": "1700000000.5",
        "t_done": "1700000000.6",
        "status": "ok",
        "reason": "",
        "w": "640",
        "h": "480",
        "model": "m1",
        "dets": json.dumps([{"label": "no_mask", "score": 0.9, "box": [10, 20, 110, 140]}]),
        "runs": "1",
    }
    return {k.encode(): v.encode() for k, v in fields.items()}


field_maps = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES + DET_FIELDS).map(str.encode), st.binary(max_size=12)),
    st.binary(max_size=64),
    max_size=16,
)


# -- parsers ---------------------------------------------------------------------------


@given(field_maps)
@settings(max_examples=300, deadline=None)
def test_frame_parser_random_fields_give_wire_error_or_a_valid_entry(
    fields: dict[bytes, bytes],
) -> None:
    try:
        entry = FrameEntry.from_fields(fields)
    except WireError as exc:
        assert exc.reason and exc.detail
        return
    assert entry.data and 1 <= entry.width <= 16384 and 1 <= entry.height <= 16384


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_frame_parser_truncated_and_corrupted_fields(data: st.DataObject) -> None:
    fields = valid_frame_fields()
    for key in data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        value = fields[key]
        how = data.draw(st.sampled_from(["cut", "drop", "noise"]))
        if how == "drop":
            fields.pop(key, None)
        elif how == "cut":
            fields[key] = value[: data.draw(st.integers(0, max(0, len(value) - 1)))]
        else:
            fields[key] = data.draw(st.binary(min_size=1, max_size=32))
    try:
        FrameEntry.from_fields(fields)
    except WireError as exc:
        assert exc.reason in {
            "missing_field",
            "bad_field",
            "bad_version",
            "bad_camera",
            "bad_encoding",
            "bad_timestamp",
            "too_large",
            "empty_image",
        }


@given(field_maps)
@settings(max_examples=300, deadline=None)
def test_detections_parser_random_fields(fields: dict[bytes, bytes]) -> None:
    try:
        DetectionsEntry.from_fields(fields)
    except WireError as exc:
        assert exc.reason


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_detections_parser_truncated_json_and_fields(data: st.DataObject) -> None:
    fields = valid_detections_fields()
    key = data.draw(st.sampled_from(sorted(fields)))
    value = fields[key]
    fields[key] = value[: data.draw(st.integers(0, len(value)))]
    if data.draw(st.booleans()):
        fields[b"dets"] = data.draw(
            st.one_of(
                st.binary(max_size=64),
                st.recursive(
                    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda inner: (
                        st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
                    ),
                    max_leaves=12,
                ).map(lambda doc: json.dumps(doc).encode()),
            )
        )
    try:
        entry = DetectionsEntry.from_fields(fields)
    except WireError as exc:
        assert exc.reason
        return
    for x1, y1, x2, y2 in entry.detections.pixels(entry.width, entry.height).tolist():
        assert 0 <= x1 <= x2 <= entry.width and 0 <= y1 <= y2 <= entry.height


@pytest.mark.parametrize("camera_id", BAD_CAMERA_IDS)
def test_bad_camera_ids_are_rejected_everywhere(camera_id: str) -> None:
    fields = valid_frame_fields()
    fields[b"camera"] = camera_id.encode()
    with pytest.raises(WireError) as caught:
        FrameEntry.from_fields(fields)
    assert caught.value.reason == "bad_camera"
    det = valid_detections_fields()
    det[b"camera"] = camera_id.encode()
    with pytest.raises(WireError):
        DetectionsEntry.from_fields(det)
    with pytest.raises(ConfigError, match=r"camera|id"):
        IngestSettings.load(cameras=[{"id": camera_id, "source": "0"}])


def test_declared_20000x20000_frame_is_too_large() -> None:
    fields = valid_frame_fields()
    fields[b"w"] = fields[b"h"] = b"20000"
    with pytest.raises(WireError) as caught:
        FrameEntry.from_fields(fields)
    assert caught.value.reason == "too_large"


# -- the gRPC API ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_service(detector: Any) -> Iterator[InferenceService]:
    service = InferenceService(
        InferenceSettings(
            host="127.0.0.1", port=0, metrics_port=0, streams=False, max_batch_size=8
        ),
        detector=detector,
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def raw_detect(grpc_service: InferenceService) -> Iterator[Any]:
    """The Detect method with raw request bytes (no client-side serialisation)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_service.port}")
    method = channel.unary_unary(
        "/facemask.v1.Detector/Detect",
        request_serializer=lambda raw: raw,
        response_deserializer=detector_pb2.DetectResponse.FromString,
    )
    yield method
    channel.close()


def _jpeg_header(width: int, height: int) -> bytes:
    """A JPEG whose SOF0 declares ``width`` x ``height`` (and holds no picture)."""
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof += b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return (
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof + b"\xff\xd9"
    )


def _still_serving(raw_detect: Any, samples_dir: Path) -> None:
    good = detector_pb2.DetectRequest(
        images=[detector_pb2.Image(data=(samples_dir / "demo2.jpg").read_bytes())]
    )
    reply = raw_detect(good.SerializeToString(), timeout=30)
    assert len(reply.results) == 1 and reply.results[0].detections


@pytest.mark.model
@given(raw=st.binary(max_size=512))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_grpc_random_and_truncated_requests_get_a_clear_status(
    raw_detect: Any, samples_dir: Path, raw: bytes
) -> None:
    good = detector_pb2.DetectRequest(
        images=[detector_pb2.Image(data=(samples_dir / "demo2.jpg").read_bytes()[:64])]
    ).SerializeToString()
    for payload in (raw, good[: len(raw) % (len(good) + 1)]):
        try:
            raw_detect(payload, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
            assert exc.details()
        # a parsable request of valid images would be answered; random bytes never are


@pytest.mark.model
@given(blob=st.binary(min_size=1, max_size=2048), camera=st.sampled_from(["", "cam-1"]))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_grpc_random_bytes_as_jpeg_are_invalid_argument(
    raw_detect: Any, blob: bytes, camera: str
) -> None:
    request = detector_pb2.DetectRequest(
        images=[detector_pb2.Image(data=b"\xff\xd8\xff" + blob, camera_id=camera)]
    )
    with pytest.raises(grpc.RpcError) as caught:
        raw_detect(request.SerializeToString(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 0" in caught.value.details()


@pytest.mark.model
def test_grpc_huge_declared_size_and_bad_camera_ids(raw_detect: Any, samples_dir: Path) -> None:
    cases = [detector_pb2.Image(data=_jpeg_header(20000, 20000))]
    sample = (samples_dir / "demo2.jpg").read_bytes()
    cases += [detector_pb2.Image(data=sample, camera_id=c) for c in BAD_CAMERA_IDS if c.strip()]
    for image in cases:
        request = detector_pb2.DetectRequest(images=[image])
        with pytest.raises(grpc.RpcError) as caught:
            raw_detect(request.SerializeToString(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    _still_serving(raw_detect, samples_dir)


# -- the stream consumer: dead letters, and it keeps working ---------------------------


@pytest.mark.model
@pytest.mark.timeout(120)
def test_stream_bad_entries_are_dead_lettered_and_good_ones_still_processed(
    detector: Any, samples_dir: Path, tmp_path: Path
) -> None:
    with RedisProcess(tmp_path / "redis") as server:
        client: Any = redis.Redis.from_url(server.url)
        service = InferenceService(
            InferenceSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=0,
                redis_url=server.url,
                max_batch_size=8,
                read_block=0.05,
                consumer_name="prop",
            ),
            detector=detector,
        )
        service.start()
        try:
            good = (samples_dir / "demo2.jpg").read_bytes()
            bad: list[tuple[str, dict[bytes, bytes]]] = []

            def frame(**changes: bytes) -> dict[bytes, bytes]:
                fields = valid_frame_fields(good)
                fields[b"ts"] = repr(time.time()).encode()
                fields[b"w"], fields[b"h"] = b"464", b"330"
                fields.update({k.encode(): v for k, v in changes.items()})
                return fields

            bad.append(("bad_image", frame(data=b"\xff\xd8\xff" + bytes(range(256)) * 4)))
            bad.append(("too_large", frame(w=b"20000", h=b"20000")))
            bad.append(("bad_camera", frame(camera=b"cam\x00\x01")))
            bad.append(("bad_camera", frame(camera=b"c" * 10_000)))
            bad.append(("missing_field", {b"v": b"1", b"camera": b"cam-1"}))
            bad.append(("bad_field", frame(frame=b"\xff\xfe")))
            key = LAYOUT.frames_for("cam-1")
            sids = {}
            for reason, fields in bad:
                target = LAYOUT.frames(LAYOUT.partition_of("cam-1"))
                sids[client.xadd(target, fields).decode()] = reason
            good_sid = client.xadd(key, frame()).decode()
            partition = LAYOUT.partition_of("cam-1")

            def results() -> tuple[dict[str, bytes], list[Any]]:
                dead = {
                    f[b"sid"].decode(): f[b"reason"]
                    for _s, f in client.xrange(LAYOUT.deadletter(partition))
                }
                dets = [
                    DetectionsEntry.from_fields(f)
                    for _s, f in client.xrange(LAYOUT.detections(partition))
                ]
                return dead, dets

            wait_until(
                lambda: len(results()[0]) == len(bad) and results()[1], 60, "all entries handled"
            )
            dead, dets = results()
            assert set(dead) == set(sids)
            for sid, reason in sids.items():
                got = dead[sid].decode()
                decode_errors = {"corrupt_image", "unsupported_format"}
                assert got == reason or (reason == "bad_image" and got in decode_errors), (
                    sid,
                    got,
                    reason,
                )
            assert [d.frame_sid for d in dets] == [good_sid]
            assert dets[0].status == "ok" and dets[0].detections
            assert not client.xpending(key, "inference")["pending"]
        finally:
            service.stop()
            client.close()
