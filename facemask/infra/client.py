"""Client of the inference service's gRPC API (``facemask.v1.Detector``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from facemask.contracts.proto import detections_from_proto
from facemask.core.types import Detections
from facemask.v1 import detector_pb2, detector_pb2_grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """Detections of one image as the server returned them."""

    width: int
    height: int
    detections: Detections
    batch_size: int
    queue_seconds: float
    compute_seconds: float


class RemoteDetector:
    """Sends encoded images to a running inference service."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # With a headless Service (dns:///inference...:50051) every replica's
                # address resolves; round_robin spreads requests over all of them instead
                # of pinning one long-lived HTTP/2 connection to one pod.
                ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
            ],
        )
        self.stub = detector_pb2_grpc.DetectorStub(self.channel)

    def model_info(self) -> detector_pb2.ModelInfo:
        """What the server runs."""
        reply: detector_pb2.ModelInfo = self.stub.GetModelInfo(
            detector_pb2.GetModelInfoRequest(), timeout=self.timeout
        )
        return reply

    def detect_encoded(
        self,
        blobs: Sequence[bytes],
        *,
        conf: float | None = None,
        iou: float | None = None,
        camera_id: str = "",
        tiles: str | None = None,
    ) -> list[RemoteResult]:
        """Detect in JPEG/PNG ``blobs`` (one request); raises ``grpc.RpcError``.

        ``tiles`` is a tiling spec (``"2x2"``, ``"off"``...); None leaves it to the server.
        """
        request = detector_pb2.DetectRequest(
            images=[detector_pb2.Image(data=b, camera_id=camera_id) for b in blobs]
        )
        if conf is not None:
            request.confidence_threshold = conf
        if iou is not None:
            request.iou_threshold = iou
        if tiles is not None:
            request.tiles = tiles
        reply = self.stub.Detect(request, timeout=self.timeout)
        return [
            RemoteResult(
                width=r.width,
                height=r.height,
                detections=detections_from_proto(list(r.detections)),
                batch_size=r.timings.batch_size,
                queue_seconds=r.timings.queue_seconds,
                compute_seconds=r.timings.compute_seconds,
            )
            for r in reply.results
        ]

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> RemoteDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
