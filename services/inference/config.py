"""Settings of the inference service (environment prefix ``FACEMASK_INFERENCE_``)."""

from __future__ import annotations

import os
import socket
from typing import Any

import grpc
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from facemask.contracts.wire import DEFAULT_MAX_CLOCK_SKEW, WireError, validate_camera_id
from facemask.core.preprocess import MAX_PIXELS
from facemask.core.tiling import MAX_TILES, TileSpec, TileSpecError, parse_tiles
from facemask.infra.settings import ServiceSettings
from facemask.infra.watchdog import SupervisionSettings
from facemask.model.runtime import RuntimeConfig, parse_runtime_config


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InferenceSettings(ServiceSettings, SupervisionSettings):
    """Every knob of the inference service; validated at start (``--check-config``)."""

    model_config = SettingsConfigDict(env_prefix="FACEMASK_INFERENCE_", extra="forbid")

    # gRPC
    host: str = Field("0.0.0.0", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one)")
    grpc_workers: int = Field(16, ge=1, le=1024, description="gRPC handler threads")
    max_message_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024 * 1024,
        le=1024 * 1024 * 1024,
        description="largest gRPC message accepted (requests beyond get RESOURCE_EXHAUSTED)",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        le=MAX_PIXELS,
        description="largest image (width*height) decoded; at most the project-wide limit",
    )
    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus port (0: none)")

    # gRPC TLS (empty: plaintext); all PEM files, read at start and at --check-config
    tls_cert: str = Field("", description="server certificate chain (PEM): serve TLS")
    tls_key: str = Field("", description="private key of tls_cert (PEM)")
    tls_ca: str = Field(
        "", description="CA of the client certificates (PEM): require one (mutual TLS)"
    )

    # model
    model: str = Field(
        "upstream",
        min_length=1,
        description="model run before (or without) a version promoted for the cluster "
        "(`facemask models promote`, which wins): upstream (the pinned model), a version "
        "of the local model store (id or unique prefix) or a model directory / .pb / "
        ".tflite path",
    )
    model_watch: bool | None = Field(
        None,
        description="follow the version promoted in Redis: load, warm and swap it in "
        "without stopping (default: when streams is on)",
    )
    model_poll_interval: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="seconds between reads of the promoted version (its change is also "
        "published: a missed message only delays the swap)",
    )
    model_retry_interval: float = Field(
        300.0,
        gt=0.0,
        le=86400.0,
        description="longest wait before a version that failed to load is tried again "
        "(back-off from 1/16 of it; at once when the promoted version changes)",
    )
    runtime: str = Field(
        "auto",
        description="detector runtime: auto (the fastest model variant on this CPU within "
        "0.01 AP50 of float32, measured at start or cached), tensorflow or tflite",
    )
    threads: int = Field(
        0, ge=0, le=256, description="model threads (0: all cores; tflite: per interpreter)"
    )
    precision: str = Field(
        "auto",
        pattern="^(auto|float32|bf16)$",
        description="tensorflow compute: float32 (the reference's numbers) or bf16 (dev-set "
        "AP50 within 0.005 of float32), explicit: runs TensorFlow even under runtime auto; "
        "auto: the auto runtime's measured choice (runtime tensorflow: bf16 where the CPU "
        "has AMX/AVX512-BF16, else float32)",
    )
    model_variant: str = Field(
        "",
        pattern="^(|upstream|float32|int8)$",
        description="tflite model: upstream (default), float32 or int8 (`facemask models "
        "build`); set under runtime auto: runs that TFLite model",
    )
    interpreters: int = Field(
        1, ge=1, le=256, description="tflite interpreters running batch items in parallel"
    )
    confidence: float = Field(0.5, gt=0.0, le=1.0, description="default score threshold")
    iou: float = Field(0.4, gt=0.0, le=1.0, description="default NMS IoU threshold")
    warmup: bool = Field(True, description="run warm-up batches before reporting SERVING")
    tiles: dict[str, str] = Field(
        default_factory=dict,
        examples=['{"lobby": "2x2", "*": "off"}'],
        description='tiled inference per camera, JSON: {"lobby": "2x2", "street": "3x3:0.25", '
        '"*": "off"} ("*": every other camera; specs ROWSxCOLS[:OVERLAP], auto[:MIN_FACE_PX], '
        "off); also the default of gRPC requests that name a camera and no tiles",
    )

    # batching
    max_batch_size: int = Field(32, ge=1, le=1024, description="largest model batch")
    max_queue_delay: float = Field(
        0.005, ge=0.0, le=1.0, description="seconds a ready image waits for a batch to fill"
    )
    max_decode_wait: float = Field(
        0.025,
        ge=0.0,
        le=1.0,
        description="seconds a batch may wait past max_queue_delay for images still decoding",
    )
    max_queue_size: int = Field(
        256,
        ge=1,
        le=100_000,
        description="model inputs admitted at once (a frame tiled RxC counts R*C+1); "
        "beyond: RESOURCE_EXHAUSTED",
    )
    max_queue_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="bytes admitted at once: encoded images plus their decoded pixels "
        "(from the header); beyond: RESOURCE_EXHAUSTED",
    )
    max_tiles: int = Field(
        16, ge=1, le=MAX_TILES, description="most tiles per frame (grids beyond are rejected)"
    )
    decode_workers: int = Field(2, ge=1, le=64, description="threads decoding JPEG/PNG")
    decode_reduce: str = Field(
        "auto",
        pattern="^(auto|full)$",
        description="auto: decode large JPEGs at 1/2, 1/4, 1/8 scale (model sees 260x260)",
    )

    # Redis streams
    streams: bool = Field(True, description="consume frames from Redis streams")
    consumer_group: str = Field("inference", min_length=1, description="consumer group")
    consumer_name: str = Field(
        default_factory=_default_consumer,
        min_length=1,
        description="consumer name in the group (default: hostname-pid)",
    )
    read_count: int = Field(32, ge=1, le=10_000, description="entries per XREADGROUP")
    read_block: float = Field(0.2, gt=0.0, le=10.0, description="seconds XREADGROUP blocks")
    max_inflight: int = Field(
        96, ge=1, le=100_000, description="stream frames read and not yet published"
    )
    max_frame_age: float = Field(
        2.0, gt=0.0, description="frames older than this (seconds) are skipped, not run"
    )
    claim_idle: float = Field(
        15.0, gt=0.0, description="seconds a pending frame may idle before another takes it"
    )
    claim_interval: float = Field(2.0, gt=0.0, description="seconds between reclaim sweeps")
    max_deliveries: int = Field(
        5, ge=1, le=1000, description="deliveries before a frame goes to the dead-letter stream"
    )
    entry_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="times an entry's processing may raise (a bug, absurd values) before it "
        "is dead-lettered with reason error (the rest of its batch is processed)",
    )
    detections_maxlen: int = Field(10_000, ge=10, description="MAXLEN ~ of detections streams")
    deadletter_maxlen: int = Field(10_000, ge=10, description="MAXLEN ~ of dead-letter streams")
    lag_interval: float = Field(5.0, gt=0.0, description="seconds between stream lag readings")
    max_clock_skew: float = Field(
        DEFAULT_MAX_CLOCK_SKEW,
        gt=0.0,
        le=86400.0,
        description="seconds a frame's capture time may lie ahead of this host's clock; "
        "later (or pre-2000) frames are dead-lettered as bad_timestamp",
    )

    # lifecycle
    drain_timeout: float = Field(15.0, ge=0.0, description="seconds SIGTERM waits for work")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        from facemask.model.runtime import available_runtimes

        if value not in available_runtimes():
            raise ValueError(f"unknown runtime {value!r}; available: {available_runtimes()}")
        return value

    @field_validator("tiles")
    @classmethod
    def _valid_tiles(cls, value: dict[str, str]) -> dict[str, str]:
        for camera, spec in value.items():
            if not camera:
                raise ValueError('tiles: empty camera id (use "*" for every camera)')
            if camera != "*":
                try:
                    validate_camera_id(camera)
                except WireError as exc:
                    raise ValueError(f"tiles: {exc.detail}") from None
            try:
                TileSpec.parse(spec)
            except TileSpecError as exc:
                raise ValueError(f"tiles[{camera!r}]: {exc}") from None
        return value

    def tiles_for(self, camera_id: str) -> TileSpec | None:
        """The tiling spec of a camera: its own entry, else ``"*"``, else none."""
        spec = self.tiles.get(camera_id) if camera_id else None
        if spec is None:
            spec = self.tiles.get("*")
        return parse_tiles(spec)

    @property
    def watches_model(self) -> bool:
        """Whether the service follows the version promoted in Redis."""
        return self.streams if self.model_watch is None else self.model_watch

    @property
    def effective_runtime(self) -> str:
        """The runtime to create: ``auto`` gives way to an explicit precision (tensorflow)
        or model variant (tflite), so an explicit setting always wins."""
        if self.runtime == "auto" and self.precision != "auto":
            return "tensorflow"
        if self.runtime == "auto" and self.model_variant:
            return "tflite"
        return self.runtime

    def runtime_config(self) -> RuntimeConfig:
        """The validated options of the chosen runtime (:mod:`facemask.model.runtime`)."""
        return parse_runtime_config({"type": self.effective_runtime, **self.runtime_options()})

    def runtime_options(self) -> dict[str, Any]:
        """Options of :func:`facemask.model.detector.create_detector` for the chosen runtime."""
        options: dict[str, Any] = {"threads": self.threads} if self.threads else {}
        runtime = self.effective_runtime
        if runtime == "tensorflow":
            options["precision"] = self.precision
        if runtime == "auto":
            options["batch_size"] = self.max_batch_size
            options["interpreters"] = self.interpreters
        if runtime == "tflite":
            options["interpreters"] = self.interpreters
            if self.model_variant:
                options["variant"] = self.model_variant
        return options

    @model_validator(mode="after")
    def _tls_files(self) -> InferenceSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key (FACEMASK_INFERENCE_TLS_*)")
        if self.tls_ca and not self.tls_cert:
            raise ValueError("tls_ca (mutual TLS) needs the server's tls_cert and tls_key")
        from facemask.infra.client import TLSConfigError, read_pem

        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            try:
                _ = read_pem(path, name) if path else None
            except TLSConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials of the gRPC port (mutual TLS with ``tls_ca``); None: plaintext."""
        if not self.tls_cert:
            return None
        from facemask.infra.client import read_pem

        ca = read_pem(self.tls_ca, "tls_ca") if self.tls_ca else None
        return grpc.ssl_server_credentials(
            [(read_pem(self.tls_key, "tls_key"), read_pem(self.tls_cert, "tls_cert"))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    @model_validator(mode="after")
    def _check(self) -> InferenceSettings:
        runtime = self.effective_runtime
        if runtime != "tflite" and self.model_variant:
            raise ValueError("model_variant applies to the tflite runtime only")
        if runtime not in ("tflite", "auto") and self.interpreters != 1:
            raise ValueError("interpreters apply to the tflite (or auto) runtime only")
        if runtime != "tensorflow" and self.precision != "auto":
            raise ValueError("precision applies to the tensorflow runtime only")
        try:
            self.runtime_config()  # every runtime option valid before the model loads
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.max_inflight < self.max_batch_size:
            raise ValueError("max_inflight must be >= max_batch_size so batches can fill")
        if self.max_queue_size < self.max_batch_size:
            raise ValueError("max_queue_size must be >= max_batch_size")
        for camera, spec in self.tiles.items():
            tiles = parse_tiles(spec)
            if tiles is None or tiles.auto_min_face_px is not None:
                continue  # automatic grids are capped by max_tiles when resolved
            try:
                tiles.check(self.max_tiles)
            except TileSpecError as exc:
                raise ValueError(f"tiles[{camera!r}]: {exc}") from None
            if tiles.windows_per_frame > self.max_queue_size:
                raise ValueError(
                    f"tiles[{camera!r}]: a {spec} frame is {tiles.windows_per_frame} model "
                    f"inputs; max_queue_size ({self.max_queue_size}) must hold one"
                )
        return self
