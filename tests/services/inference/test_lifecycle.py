"""Start-up, health and shutdown of the real ``python -m services.inference`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from facemask.dev.waiting import wait_until
from facemask.model.runtime.base import native_bf16
from facemask.v1 import detector_pb2, detector_pb2_grpc
from tests.fixtures.inference import health_status
from tests.fixtures.paths import REPO_ROOT

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def _check_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_INFERENCE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.inference", "--check-config"],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_defaults() -> None:
    result = _check_config()
    assert result.returncode == 0, result.stderr
    assert "FACEMASK_INFERENCE_MAX_BATCH_SIZE=32" in result.stdout
    assert "configuration OK" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACEMASK_INFERENCE_MAX_BATCH_SIZE": "0"}, "FACEMASK_INFERENCE_MAX_BATCH_SIZE"),
        (
            {"FACEMASK_INFERENCE_MAX_BATCH_SZE": "8"},
            "unknown setting(s) FACEMASK_INFERENCE_MAX_BATCH_SZE",
        ),
        ({"FACEMASK_INFERENCE_DECODE_REDUCE": "half"}, "FACEMASK_INFERENCE_DECODE_REDUCE"),
        (
            {"FACEMASK_INFERENCE_MAX_INFLIGHT": "4", "FACEMASK_INFERENCE_MAX_BATCH_SIZE": "8"},
            "max_inflight must be >= max_batch_size",
        ),
        ({"FACEMASK_INFERENCE_PRECISION": "fp16"}, "FACEMASK_INFERENCE_PRECISION"),
        (
            {"FACEMASK_INFERENCE_RUNTIME": "tflite", "FACEMASK_INFERENCE_PRECISION": "bf16"},
            "precision applies to the tensorflow runtime only",
        ),
    ],
)
def test_check_config_rejects_bad_settings(env: dict[str, str], message: str) -> None:
    result = _check_config(**env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_not_serving_until_warm_then_sigterm_exits_cleanly(
    redis_server: Any, inference_process: Any
) -> None:
    proc = inference_process(
        FACEMASK_INFERENCE_REDIS_URL=redis_server.url, FACEMASK_INFERENCE_MAX_BATCH_SIZE="32"
    )
    seen: list[int | None] = []

    def observed_serving() -> bool:
        status = health_status(proc.port, timeout=0.5)
        if status is not None:
            seen.append(status)
        assert proc.proc.poll() is None, proc.log_path.read_text()[-3000:]
        return status == SERVING

    wait_until(observed_serving, 120, "SERVING", interval=0.05)
    assert seen[0] == NOT_SERVING, "health must say NOT_SERVING while the model loads"
    assert health_status(proc.port, "liveness") == SERVING
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics").read()
    assert b"facemask_inference_ready 1.0" in metrics
    assert b'facemask_model_info{name="aizoo-face-mask"' in metrics
    # The default runtime is auto: the fastest variant measured here (or cached).
    assert b"facemask_model_variant_info{" in metrics
    assert b"facemask_model_variant_images_per_second{" in metrics
    with grpc.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        info = detector_pb2_grpc.DetectorStub(channel).GetModelInfo(
            detector_pb2.GetModelInfoRequest(), timeout=5
        )
    assert (info.runtime, info.precision) in {
        ("tensorflow", "bf16" if native_bf16() else "float32"),
        ("tflite", "float32"),
        ("tflite", "int8"),
    }
    assert f'precision="{info.precision}"'.encode() in metrics
    assert info.version.endswith("-bf16") == (info.precision == "bf16")
    start = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert time.monotonic() - start < 30
    log = proc.log_path.read_text()
    assert '"msg": "model warmed up"' in log
    assert '"msg": "model variant"' in log
    assert log.index("model warmed up") < log.index("inference service SERVING")
