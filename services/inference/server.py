"""gRPC server of the inference service: the ``facemask.v1.Detector`` API, the standard
``grpc.health.v1`` health service and server reflection.

Health: the service names ``""`` and ``facemask.v1.Detector`` report NOT_SERVING until
the model is loaded and warmed up (readiness), and again while draining; ``liveness``
reports SERVING as long as the process answers (Kubernetes liveness probe).

Requests are judged before any work: ``Detect`` takes the raw request bytes and parses
them itself (:func:`add_detector_service`), so a malformed message is INVALID_ARGUMENT
with a clear message (grpcio's own deserializer would answer INTERNAL); bad thresholds,
tiles, camera ids or empty images are INVALID_ARGUMENT; a request whose images cost more
model inputs (tiles included) or bytes than the batcher's queue holds is
RESOURCE_EXHAUSTED, decided from the image headers before any image is decoded or any
tensor is built (:meth:`~services.inference.batcher.DynamicBatcher.submit_all`: all of
a request's images or none).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facemask.contracts.proto import detections_to_proto
from facemask.contracts.wire import WireError, validate_camera_id
from facemask.core.preprocess import ImageDecodeError
from facemask.core.tiling import TileSpec, TileSpecError
from facemask.v1 import detector_pb2, detector_pb2_grpc
from services.inference.batcher import (
    DeadlineExpiredError,
    DynamicBatcher,
    InvalidJobError,
    Job,
    JobResult,
    QueueFullError,
    RequestTooLargeError,
    ShuttingDownError,
)
from services.inference.config import InferenceSettings
from services.inference.metrics import InferenceMetrics

logger = logging.getLogger(__name__)

_Message = TypeVar("_Message", bound=Message)

SERVICE_NAME = detector_pb2.DESCRIPTOR.services_by_name["Detector"].full_name
LIVENESS = "liveness"
MAX_IMAGES_PER_REQUEST = 256


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    """Implements ``facemask.v1.Detector`` on top of the shared dynamic batcher."""

    def __init__(self, metrics: InferenceMetrics, settings: InferenceSettings) -> None:
        self.batcher: DynamicBatcher | None = None
        self.model_info = detector_pb2.ModelInfo()
        self.metrics = metrics
        self.settings = settings

    def attach(self, batcher: DynamicBatcher, model_info: detector_pb2.ModelInfo) -> None:
        """Start answering with this batcher (once the model is loaded and warm);
        :attr:`model_info` is replaced whenever the model changes."""
        self.model_info = model_info
        self.batcher = batcher

    def _batcher(self, context: grpc.ServicerContext) -> DynamicBatcher:
        if self.batcher is None:
            self._fail(
                context, grpc.StatusCode.UNAVAILABLE, "unavailable", "the model is still loading"
            )
        assert self.batcher is not None
        return self.batcher

    def GetModelInfo(  # noqa: N802 (gRPC method name)
        self, request: detector_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> detector_pb2.ModelInfo:
        self._batcher(context)
        return self.model_info

    def _fail(
        self, context: grpc.ServicerContext, code: grpc.StatusCode, outcome: str, msg: str
    ) -> NoReturn:
        """Count the outcome and end the call with ``code`` (``abort`` raises)."""
        self.metrics.requests.labels("grpc", outcome).inc()
        context.abort(code, msg)
        raise AssertionError("unreachable: context.abort raises")

    def _thresholds(
        self, request: detector_pb2.DetectRequest, context: grpc.ServicerContext
    ) -> tuple[float, float]:
        conf = self.settings.confidence
        iou = self.settings.iou
        if request.HasField("confidence_threshold"):
            conf = request.confidence_threshold
        if request.HasField("iou_threshold"):
            iou = request.iou_threshold
        for name, value in (("confidence_threshold", conf), ("iou_threshold", iou)):
            if not 0.0 < value <= 1.0:
                self._fail(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid",
                    f"{name} must be in (0, 1], got {value}",
                )
        return conf, iou

    def parse(self, message: type[_Message], raw: bytes, context: grpc.ServicerContext) -> _Message:
        """``message`` parsed from a request's wire bytes; a message that does not parse is
        INVALID_ARGUMENT (see :func:`add_detector_service`)."""
        try:
            return message.FromString(raw)
        except (DecodeError, ValueError) as exc:
            self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid",
                f"malformed {message.DESCRIPTOR.name} ({len(raw)} bytes): {exc}",
            )

    def Detect(  # noqa: N802 (gRPC method name)
        self, request: detector_pb2.DetectRequest, context: grpc.ServicerContext
    ) -> detector_pb2.DetectResponse:
        batcher = self._batcher(context)
        if not request.images:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", "no images")
        if len(request.images) > MAX_IMAGES_PER_REQUEST:
            self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid",
                f"{len(request.images)} images; at most {MAX_IMAGES_PER_REQUEST} per request",
            )
        conf, iou = self._thresholds(request, context)
        request_tiles: TileSpec | None = None
        has_tiles = request.HasField("tiles")
        if has_tiles:
            try:
                request_tiles = TileSpec.parse(request.tiles)
                if request_tiles is not None:
                    request_tiles.check(self.settings.max_tiles)
            except TileSpecError as exc:
                self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", f"tiles: {exc}")
        remaining = context.time_remaining()  # a huge number when the client set none
        deadline = (
            time.monotonic() + remaining if remaining is not None and remaining < 1e6 else None
        )
        jobs: list[Job] = []
        for index, image in enumerate(request.images):
            if not image.data:
                self._fail(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid",
                    f"image {index}: empty image bytes",
                )
            if image.camera_id:
                try:
                    validate_camera_id(image.camera_id)
                except WireError as exc:
                    self._fail(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "invalid",
                        f"image {index}: {exc.detail}",
                    )
            jobs.append(
                Job(
                    data=image.data,
                    conf=conf,
                    iou=iou,
                    camera_id=image.camera_id,
                    source="grpc",
                    deadline=deadline,
                    tiles=request_tiles if has_tiles else self.settings.tiles_for(image.camera_id),
                )
            )
        futures = self._submit(batcher, jobs, context)
        info = self.model_info
        ran: set[str] = set()
        results = []
        for index, (image, future) in enumerate(zip(request.images, futures, strict=True)):
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result = future.result(timeout=timeout)
            except (DeadlineExpiredError, FutureTimeout):
                self._fail(
                    context,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "deadline",
                    f"image {index}: deadline exceeded before the model ran it",
                )
            except ImageDecodeError as exc:
                self._fail(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    exc.reason if exc.reason in ("too_large",) else "invalid",
                    f"image {index}: {exc}",
                )
            except Exception as exc:
                logger.exception("detect failed")
                self._fail(context, grpc.StatusCode.INTERNAL, "error", f"image {index}: {exc}")
            self.metrics.requests.labels("grpc", "ok").inc()
            ran.add(result.model)
            results.append(
                detector_pb2.ImageResult(
                    detections=detections_to_proto(result.detections, result.width, result.height),
                    width=result.width,
                    height=result.height,
                    camera_id=image.camera_id,
                    frame_id=image.frame_id,
                    timings=detector_pb2.Timings(
                        queue_seconds=result.queue_seconds,
                        decode_seconds=result.decode_seconds,
                        compute_seconds=result.compute_seconds,
                        batch_size=result.batch_size,
                        model_runs=result.model_runs,
                    ),
                )
            )
        if ran and ran != {info.version}:  # a model swap came while they ran
            latest = self.model_info
            info = (
                latest
                if ran == {latest.version}
                else detector_pb2.ModelInfo(name=latest.name, version=",".join(sorted(ran)))
            )
        return detector_pb2.DetectResponse(results=results, model=info)

    def _submit(
        self, batcher: DynamicBatcher, jobs: list[Job], context: grpc.ServicerContext
    ) -> list[Future[JobResult]]:
        """Admit a request's images, all or none, before anything is decoded."""
        try:
            return batcher.submit_all(jobs)
        except RequestTooLargeError as exc:
            self._fail(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(exc))
        except QueueFullError as exc:
            self._fail(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full", str(exc))
        except InvalidJobError as exc:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
        except ShuttingDownError as exc:
            self._fail(context, grpc.StatusCode.UNAVAILABLE, "unavailable", str(exc))


def add_detector_service(servicer: DetectorServicer, server: grpc.Server) -> None:
    """Register ``facemask.v1.Detector`` on ``server`` like the generated
    ``add_DetectorServicer_to_server``, except that each method receives the raw request
    bytes and parses them with :meth:`DetectorServicer.parse`, so a malformed message is
    answered INVALID_ARGUMENT rather than grpcio's INTERNAL."""

    def detect(raw: bytes, context: grpc.ServicerContext) -> detector_pb2.DetectResponse:
        return servicer.Detect(servicer.parse(detector_pb2.DetectRequest, raw, context), context)

    def model_info(raw: bytes, context: grpc.ServicerContext) -> detector_pb2.ModelInfo:
        request = servicer.parse(detector_pb2.GetModelInfoRequest, raw, context)
        return servicer.GetModelInfo(request, context)

    handlers = {
        "Detect": grpc.unary_unary_rpc_method_handler(
            detect, response_serializer=detector_pb2.DetectResponse.SerializeToString
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            model_info, response_serializer=detector_pb2.ModelInfo.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class GrpcServer:
    """The grpc.Server with the detector, health and reflection services.

    TLS comes from the settings (``tls_cert`` + ``tls_key``; ``tls_ca``: clients must
    present a certificate signed by it): then the port accepts TLS only, health checks
    included.
    """

    def __init__(self, settings: InferenceSettings, servicer: DetectorServicer) -> None:
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Clients reconnect (and re-resolve) every few minutes, so new replicas get
            # traffic from round_robin clients; in-flight calls get a grace period.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ]
        self.server = grpc.server(
            ThreadPoolExecutor(settings.grpc_workers, thread_name_prefix="grpc"),
            options=options,
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.set_ready(False)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.servicer = servicer
        add_detector_service(servicer, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{settings.host}:{settings.port}"
        credentials = settings.server_credentials()
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        self.tls = "mutual" if settings.tls_ca else "on" if credentials else "off"
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC port {settings.host}:{settings.port}")

    def set_ready(self, ready: bool) -> None:
        """Readiness: SERVING only once the model is warm; NOT_SERVING while draining."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def start(self) -> None:
        """Start serving."""
        self.server.start()

    def stop(self, grace: float) -> None:
        """Stop accepting RPCs; in-flight ones get ``grace`` seconds to finish."""
        self.set_ready(False)
        self.server.stop(grace).wait(grace + 1.0)
