"""Client of the inference service's gRPC API (``facemask.v1.Detector``).

Every gRPC client of the project opens its channel with :func:`open_channel`: plaintext
without :class:`ClientTLS`, else TLS (``ca``: the CA that signed the server's certificate,
empty: the system's roots) and mutual TLS (``cert`` + ``key``: this client's certificate,
for a server started with ``FACEMASK_INFERENCE_TLS_CA``). ``server_name`` overrides the
name checked in the server's certificate (a certificate for ``inference`` reached at
``10.0.0.5:50051``). :meth:`ClientTLS.from_env` reads ``FACEMASK_GRPC_TLS_CA``,
``_CERT``, ``_KEY``, ``_SERVER_NAME`` (the CLI's defaults).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class TLSConfigError(ValueError):
    """The TLS settings are incomplete or a PEM file cannot be read (says which)."""


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or :class:`TLSConfigError` naming ``what`` it is."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{what} {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TLSConfigError(f"{what} {path!r} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS settings of a gRPC client (paths of PEM files; empty: not used)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    ENV_PREFIX = "FACEMASK_GRPC_TLS_"

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise TLSConfigError(
                "a client certificate needs its key: set both tls_cert and tls_key"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTLS | None:
        """From ``FACEMASK_GRPC_TLS_CA`` / ``_CERT`` / ``_KEY`` / ``_SERVER_NAME``; None
        when none is set (plaintext)."""
        env = os.environ if environ is None else environ
        values = {
            f: env.get(cls.ENV_PREFIX + f.upper(), "") for f in ("ca", "cert", "key", "server_name")
        }
        return cls(**values) if any(values.values()) else None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (reads the PEM files now)."""
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "tls_ca") if self.ca else None,
            private_key=read_pem(self.key, "tls_key") if self.key else None,
            certificate_chain=read_pem(self.cert, "tls_cert") if self.cert else None,
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options (the server name override)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(
    target: str, tls: ClientTLS | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel to ``target`` (``host:port``): TLS with ``tls``, else plaintext."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])


class RemoteDetector:
    """Sends encoded images to a running inference service."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: ClientTLS | None = None,
    ) -> None:
        """``tls``: TLS / mutual TLS (None: plaintext)."""
        self.target = target
        self.timeout = timeout
        self.channel = open_channel(
            target,
            tls,
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
