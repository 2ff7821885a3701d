"""``facemask run``: the whole local pipeline comes up, detects, and stops without leftovers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry
from facemask.dev.localredis import free_port
from facemask.dev.supervisor import ChildSpec, LogLineProbe, Supervisor
from facemask.dev.waiting import WaitTimeoutError, wait_until
from tests.fixtures.paths import REPO_ROOT

pytestmark = [pytest.mark.model, pytest.mark.slow]

REDIS_LINE = re.compile(r"redis-server .* at redis://:\*\*\*@127\.0\.0\.1:(\d+)/0")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_pipeline_end_to_end(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FACEMASK_") or k == "FACEMASK_MODEL_MIRROR"
    }
    printed = LogLineProbe(r"^dashboard: http://")
    supervisor = Supervisor()
    run = supervisor.start(
        ChildSpec(
            "facemask-run",
            [
                sys.executable,
                "-m",
                "facemask.cli",
                "run",
                "--state-dir",
                str(tmp_path / "state"),
                "--dashboard-port",
                str(free_port()),
                "--grpc-port",
                str(free_port()),
            ],
            env=env,
            cwd=REPO_ROOT,
            ready=printed,
            ready_timeout=180,
            ready_interval=1.0,
            log_path=tmp_path / "run.log",
            grace=90,
        )
    )
    deadline = time.monotonic() + 180

    def log() -> str:
        return run.log_tail(1_000_000)

    try:
        run.wait_ready()  # the dashboard line; ChildExitedError (with the output) if it dies
        redis_port = match.group(1) if (match := re.search(REDIS_LINE, log())) else None
        dashboard = printed.line.split(": ", 1)[1].strip() if printed.line else None
        assert dashboard and redis_port, log()
        page = urllib.request.urlopen(dashboard, timeout=10).read().decode()
        assert "<html" in page.lower()
        password_file = tmp_path / "state" / "redis" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 32 and password not in log(), "the password is never printed"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(redis_port)).ping()  # the Redis of `make run` needs it
        client = redis.Redis(port=int(redis_port), password=password)
        layout = StreamLayout()
        entries: list[DetectionsEntry] = []

        def detected() -> bool:
            entries[:] = [
                DetectionsEntry.from_fields(fields)
                for key in layout.all_detections()
                for _, fields in client.xrange(key)
            ]
            return any(e.detections for e in entries)

        with contextlib.suppress(WaitTimeoutError):
            wait_until(detected, max(0.0, deadline - time.monotonic()), "detections", 1.0)
        assert any(e.status == "ok" and e.detections for e in entries), log()
        cameras = json.loads(urllib.request.urlopen(dashboard + "api/cameras", timeout=10).read())
        assert cameras, "the dashboard API lists the sample camera"
        client.close()
        family = _descendants(run.pid)
        assert len(family) >= 4, "redis, inference, alerts and ingest run as child processes"
        run.send_signal(signal.SIGTERM)
        assert run.wait(90) == 0, log()
        time.sleep(0.5)
        leftovers = [pid for pid in family if _alive(pid)]
        assert not leftovers, f"processes left behind: {leftovers}"
    finally:
        supervisor.stop_all()
