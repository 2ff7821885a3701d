"""``python -m services.alerts`` as a real child process: webhook outage across a crash and
restart, graceful SIGTERM, configuration errors, and no TensorFlow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facemask.contracts.wire import AlertEvent
from facemask.dev.localredis import RedisProcess, free_port
from facemask.dev.supervisor import (
    ChildExitedError,
    ChildSpec,
    HttpProbe,
    Supervisor,
    inherited_env,
    python_argv,
)
from facemask.dev.waiting import wait_until
from services.alerts.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.fixtures.paths import REPO_ROOT
from tests.services.alerts.conftest import (
    LAYOUT,
    PERSON_A,
    PERSON_B,
    Feeder,
    HookServer,
    bare,
    drained,
    masked,
)

SECRET = "restart-secret"
OUTAGE_S = 30.0


class AlertProcess:
    """The service as a supervised child process, logging JSON to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["FACEMASK_ALERTS_PORT"])
        self.log = log
        self.child = Supervisor().start(
            ChildSpec(
                "alerts",
                python_argv("services.alerts"),
                env=inherited_env(
                    {"PYTHONUNBUFFERED": "1", "FACEMASK_LOG_FORMAT": "json", **env},
                    drop_prefix="FACEMASK_",
                ),
                cwd=REPO_ROOT,
                log_path=log,
                ready=HttpProbe(f"http://127.0.0.1:{self.port}/readyz", timeout=5.0),
                ready_interval=0.05,
            )
        )

    @property
    def proc(self) -> subprocess.Popen[Any]:
        assert self.child.proc is not None
        return self.child.proc

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5.0, **kwargs)

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self.child.wait_ready(timeout)
        except ChildExitedError:
            pytest.fail(f"service exited early:\n{self.child.log_tail()}")

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/alerts", params={"limit": 500}).json()["alerts"])

    def close(self) -> None:
        self.child.kill()


def webhook_row(service: AlertProcess, alert_id: str) -> dict[str, Any]:
    detail = service.get(f"/api/alerts/{alert_id}").json()
    return {d["sink"]: d for d in detail["deliveries"]}["webhook"]


def child_env(redis_url: str, state: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "FACEMASK_ALERTS_REDIS_URL": redis_url,
        "FACEMASK_ALERTS_STATE_DIR": str(state),
        "FACEMASK_ALERTS_HOST": "127.0.0.1",
        "FACEMASK_ALERTS_PORT": str(port),
        "FACEMASK_ALERTS_CONSUMER_NAME": "alerts-restart",
        "FACEMASK_ALERTS_READ_BLOCK": "0.1",
        "FACEMASK_ALERTS_MAINTENANCE_INTERVAL": "0.5",
        **extra,
    }


@pytest.mark.slow
def test_webhook_down_30s_across_a_crash_and_restart_loses_and_duplicates_nothing(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    hooks = HookServer()  # not listening: the endpoint is down from the start
    port = free_port()
    env = child_env(
        redis_server.url,
        tmp_path / "state",
        port,
        FACEMASK_ALERTS_WEBHOOK_URL=hooks.url + "/hook",
        FACEMASK_ALERTS_WEBHOOK_SECRET=SECRET,
        FACEMASK_ALERTS_RETRY_INITIAL="0.5",
        FACEMASK_ALERTS_RETRY_MAX="2",
        # No cooldown: only the restored tracker state can keep the still-unmasked person
        # from alerting a second time after the restart.
        FACEMASK_ALERTS_COOLDOWN="0",
    )
    outage_start = time.monotonic()
    first = AlertProcess(env, tmp_path / "alerts-1.log")
    second: AlertProcess | None = None
    try:
        first.wait_ready()
        lobby = Feeder(redis_client, "lobby", sample_jpeg, start_ts=time.time() - 10)
        lobby.frames(5, [masked(PERSON_A)])
        lobby.frames(15, [bare(PERSON_A)])  # unmasked for 3 s
        wait_until(lambda: drained(redis_client), 10, "entries consumed")
        (alert,) = wait_until(first.alerts, 10, "the lobby alert")
        assert webhook_row(first, alert["id"])["status"] == "pending"
        wait_until(lambda: webhook_row(first, alert["id"])["attempts"], 10, "a failed attempt")

        first.proc.send_signal(signal.SIGKILL)  # crash
        first.proc.wait(10)
        # While the service is down: the lobby person is still unmasked, and a person at
        # the door takes the mask off - that alert must not be lost.
        lobby.frames(10, [bare(PERSON_A)])
        door = Feeder(redis_client, "door", sample_jpeg, start_ts=time.time() - 4)
        door.frames(3, [masked(PERSON_B)])
        door.frames(10, [bare(PERSON_B)])

        second = AlertProcess(env, tmp_path / "alerts-2.log")
        second.wait_ready()
        wait_until(lambda: drained(redis_client), 10, "backlog consumed")
        alerts = wait_until(lambda: len(second.alerts()) == 2 and second.alerts(), 10, "door")
        assert sorted(a["camera_id"] for a in alerts) == ["door", "lobby"]
        assert hooks.received() == []

        # The endpoint comes back after 30 s.
        remaining = OUTAGE_S - (time.monotonic() - outage_start)
        assert remaining > 0, "the outage must last 30 s"
        time.sleep(remaining)
        hooks.up()
        wait_until(lambda: len(hooks.received("/hook")) >= 2, 10, "deliveries after the outage")
        time.sleep(1.5)  # a duplicate would arrive within the 2 s retry cap
        received = hooks.received("/hook")
        assert sorted(r.json()["alert"]["id"] for r in received) == sorted(a["id"] for a in alerts)
        for req in received:
            assert verify_signature(
                SECRET, req.headers[TIMESTAMP_HEADER], req.body, req.headers[SIGNATURE_HEADER]
            )
        # Other sinks: each alert exactly once on the Redis stream.
        events = [AlertEvent.from_fields(f) for _sid, f in redis_client.xrange(LAYOUT.alerts)]
        assert sorted(e.alert_id for e in events) == sorted(a["id"] for a in alerts)
        webhook = webhook_row(second, alert["id"])
        assert webhook["status"] == "delivered" and webhook["attempts"] >= 3
        metrics = second.get("/metrics").text
        assert 'facemask_sink_deliveries_total{outcome="retry",sink="webhook"}' in metrics

        # Graceful stop.
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(15) == 0
        log = second.log.read_text()
        assert '"msg": "alert service stopped"' in log and '"service": "alerts"' in log
    finally:
        hooks.down()
        first.close()
        if second is not None:
            second.close()


def test_configuration_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_")}

    def check(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.alerts", "--check-config"],
            cwd=REPO_ROOT,
            env={**base, "FACEMASK_ALERTS_STATE_DIR": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = check(
        FACEMASK_ALERTS_RULES='{"lobby": {"k": 3, "n": 5}}',
        FACEMASK_ALERTS_API_TOKEN="secret-token",
        FACEMASK_ALERTS_SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/XYZ",
    )
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout and "FACEMASK_ALERTS_RULE_K=5" in ok.stdout
    assert "secret-token" not in ok.stdout and "XYZ" not in ok.stdout
    for env, words in (
        ({"FACEMASK_ALERTS_RULE_K": "9"}, ["rule_k (9) must be <= rule_n (8)"]),
        ({"FACEMASK_ALERTS_RULES": '{"lobby": {"k": 9}}'}, ["rules[lobby]", "k (9)"]),
        ({"FACEMASK_ALERTS_RULES": '{"lobby": {"kk": 1}}'}, ["rules[lobby]: kk: unknown key"]),
        (
            {"FACEMASK_ALERTS_RULES": "{not json"},
            ["FACEMASK_ALERTS_RULES: expected JSON", "e.g. FACEMASK_ALERTS_RULES="],
        ),
        ({"FACEMASK_ALERTS_WEBHOOK_URL": "http://x/hook"}, ["WEBHOOK_SECRET"]),
        ({"FACEMASK_ALERTS_MQTT_URL": "http://broker"}, ["mqtt://"]),
        ({"FACEMASK_ALERTS_TYPO": "1"}, ["unknown setting", "FACEMASK_ALERTS_TYPO"]),
    ):
        result = check(**env)
        assert result.returncode == 2, (env, result.stdout)
        for word in words:
            assert word in result.stderr, (env, result.stderr)


def test_importing_the_service_loads_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import services.alerts.__main__, services.alerts.service, services.alerts.api\n"
        "import services.alerts.sinks\n"
        "services.alerts.sinks.load_builtin_sinks()\n"
        "heavy = [m for m in ('tensorflow', 'grpc', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
