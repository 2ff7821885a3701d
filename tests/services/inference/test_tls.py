"""gRPC over TLS and mutual TLS: a real ``GrpcServer`` on a loopback port, certificates
made in the test by the ``openssl`` CLI (a CA, a server certificate for localhost /
127.0.0.1 and ``inference.internal``, a client certificate, and a second, unrelated CA).

No model is loaded: the detector servicer answers UNAVAILABLE "the model is still
loading", which is proof enough that a call got through the handshake to the servicer;
the health service answers SERVING once told so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from facemask.dev.supervisor import GRPC_SERVING, GrpcHealthProbe, grpc_health_status
from facemask.infra.client import ClientTLS, RemoteDetector, TLSConfigError
from facemask.infra.settings import ConfigError
from services.inference.config import InferenceSettings
from services.inference.metrics import InferenceMetrics
from services.inference.server import LIVENESS, DetectorServicer, GrpcServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

LOADING = "the model is still loading"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip


def make_leaf(d: Path, name: str, ca: str, san: str, usage: str) -> None:
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    san = "DNS:localhost,DNS:inference.internal,IP:127.0.0.1"
    make_leaf(d, "server", "ca", san, "serverAuth")
    make_leaf(d, "client", "ca", "DNS:client", "clientAuth")
    make_leaf(d, "stranger", "other-ca", "DNS:stranger", "clientAuth")
    return Pki(d)


@pytest.fixture()
def serve(pki: Pki) -> Iterator[Any]:
    servers: list[GrpcServer] = []

    def start(**tls: str) -> GrpcServer:
        settings = InferenceSettings(host="127.0.0.1", port=0, metrics_port=0, streams=False, **tls)
        server = GrpcServer(
            settings, DetectorServicer(InferenceMetrics(CollectorRegistry()), settings)
        )
        server.start()
        server.set_ready(True)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)


def model_info_error(port: int, tls: ClientTLS | None, target: str = "") -> grpc.RpcError:
    with (
        RemoteDetector(target or f"127.0.0.1:{port}", timeout=5.0, tls=tls) as remote,
        pytest.raises(grpc.RpcError) as err,
    ):
        remote.model_info()
    return err.value


def reached_servicer(err: grpc.RpcError) -> bool:
    return bool(err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == LOADING)


def test_tls(serve: Any, pki: Pki) -> None:
    server = serve(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    assert server.tls == "on"
    tls = ClientTLS(ca=pki["ca.pem"])
    assert reached_servicer(model_info_error(server.port, tls))
    target = f"127.0.0.1:{server.port}"
    assert grpc_health_status(target, tls=tls) == GRPC_SERVING
    assert grpc_health_status(target, LIVENESS, tls=tls) == GRPC_SERVING
    assert GrpcHealthProbe(server.port, tls=tls).check(None)  # type: ignore[arg-type]
    # a name override for a certificate issued to a DNS name
    named = ClientTLS(ca=pki["ca.pem"], server_name="inference.internal")
    assert reached_servicer(model_info_error(server.port, named))
    # a client certificate is not needed without tls_ca, but is accepted
    with_cert = ClientTLS(ca=pki["ca.pem"], cert=pki["client.pem"], key=pki["client.key"])
    assert reached_servicer(model_info_error(server.port, with_cert))


def test_tls_refuses_plaintext_wrong_ca_and_wrong_name(serve: Any, pki: Pki) -> None:
    server = serve(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    target = f"127.0.0.1:{server.port}"
    for tls in (
        None,  # plaintext
        ClientTLS(ca=pki["other-ca.pem"]),  # the server's certificate is not signed by it
        ClientTLS(ca=pki["ca.pem"], server_name="elsewhere.example"),  # not its name
    ):
        err = model_info_error(server.port, tls)
        assert err.code() == grpc.StatusCode.UNAVAILABLE and not reached_servicer(err)
        assert grpc_health_status(target, tls=tls, timeout=2.0) is None


def test_mutual_tls(serve: Any, pki: Pki) -> None:
    server = serve(tls_cert=pki["server.pem"], tls_key=pki["server.key"], tls_ca=pki["ca.pem"])
    assert server.tls == "mutual"
    target = f"127.0.0.1:{server.port}"
    good = ClientTLS(ca=pki["ca.pem"], cert=pki["client.pem"], key=pki["client.key"])
    assert reached_servicer(model_info_error(server.port, good))
    assert grpc_health_status(target, tls=good) == GRPC_SERVING
    refused = {
        "no client certificate": ClientTLS(ca=pki["ca.pem"]),
        "client certificate of another CA": ClientTLS(
            ca=pki["ca.pem"], cert=pki["stranger.pem"], key=pki["stranger.key"]
        ),
        "plaintext": None,
    }
    for name, tls in refused.items():
        err = model_info_error(server.port, tls)
        assert err.code() == grpc.StatusCode.UNAVAILABLE and not reached_servicer(err), name
        assert grpc_health_status(target, tls=tls, timeout=2.0) is None, name


def test_plaintext_server_refuses_tls_clients(serve: Any, pki: Pki) -> None:
    server = serve()
    assert server.tls == "off"
    assert reached_servicer(model_info_error(server.port, None))
    assert not reached_servicer(model_info_error(server.port, ClientTLS(ca=pki["ca.pem"])))


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"tls_cert": "server.pem"}, "both tls_cert and tls_key"),
        ({"tls_key": "server.key"}, "both tls_cert and tls_key"),
        ({"tls_ca": "ca.pem"}, "needs the server's tls_cert"),
        ({"tls_cert": "missing.pem", "tls_key": "server.key"}, "tls_cert"),
        ({"tls_cert": "server.pem", "tls_key": "server.ext"}, "not a PEM file"),
    ],
)
def test_bad_tls_settings_are_config_errors(
    pki: Pki, tls: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TLS_CERT", "TLS_KEY", "TLS_CA"):
        monkeypatch.delenv(f"FACEMASK_INFERENCE_{name}", raising=False)
    with pytest.raises(ConfigError, match=message):
        InferenceSettings.load(streams=False, **{k: pki[v] for k, v in tls.items()})


def test_client_tls_settings(pki: Pki) -> None:
    with pytest.raises(TLSConfigError, match="tls_cert and tls_key"):
        ClientTLS(cert=pki["client.pem"])
    with pytest.raises(TLSConfigError, match="tls_ca"):
        ClientTLS(ca=pki["nope.pem"]).credentials()
    assert ClientTLS.from_env({}) is None
    env = {"FACEMASK_GRPC_TLS_CA": "a.pem", "FACEMASK_GRPC_TLS_SERVER_NAME": "inference"}
    assert ClientTLS.from_env(env) == ClientTLS(ca="a.pem", server_name="inference")


def test_cli_detect_over_mutual_tls(serve: Any, pki: Pki, tmp_path: Path) -> None:
    """``facemask detect --server`` with the ``--tls-*`` options reaches the servicer;
    without them the handshake fails (the real CLI in a subprocess)."""
    server = serve(tls_cert=pki["server.pem"], tls_key=pki["server.key"], tls_ca=pki["ca.pem"])
    image = tmp_path / "one.png"
    assert cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    base = [sys.executable, "-m", "facemask.cli", "detect", "--server", f"127.0.0.1:{server.port}"]

    def detect(*tls: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *tls, str(image)], capture_output=True, text=True, timeout=60, check=False
        )

    good = detect(
        "--tls-ca", pki["ca.pem"], "--tls-cert", pki["client.pem"], "--tls-key", pki["client.key"]
    )
    assert good.returncode == 1 and LOADING in good.stderr, good.stderr
    plain = detect()
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr, plain.stderr
    assert LOADING not in plain.stderr
    missing = detect("--tls-ca", pki["nope.pem"])
    assert missing.returncode == 2 and "tls_ca" in missing.stderr, missing.stderr
