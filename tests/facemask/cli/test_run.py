"""``facemask run``: the whole local pipeline comes up, detects, and stops without leftovers."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry
from facemask.dev.localredis import free_port
from tests.fixtures.paths import REPO_ROOT

pytestmark = [pytest.mark.model, pytest.mark.slow]


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
    proc = subprocess.Popen(
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
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    dashboard = redis_port = None
    deadline = time.monotonic() + 180
    try:
        while dashboard is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(log)
                continue
            if match := re.search(r"redis-server .* on port (\d+)", line):
                redis_port = int(match.group(1))
            if line.startswith("dashboard: http://"):
                dashboard = line.split(": ", 1)[1].strip()
        assert dashboard and redis_port, "".join(log)
        page = urllib.request.urlopen(dashboard, timeout=10).read().decode()
        assert "<html" in page.lower()
        client = redis.Redis(port=redis_port)
        layout = StreamLayout()
        entries: list[DetectionsEntry] = []
        while time.monotonic() < deadline and not any(e.detections for e in entries):
            time.sleep(1)
            entries = [
                DetectionsEntry.from_fields(fields)
                for key in layout.all_detections()
                for _, fields in client.xrange(key)
            ]
        assert any(e.status == "ok" and e.detections for e in entries), "".join(log)
        cameras = json.loads(urllib.request.urlopen(dashboard + "api/cameras", timeout=10).read())
        assert cameras, "the dashboard API lists the sample camera"
        client.close()
        family = _descendants(proc.pid)
        assert len(family) >= 4, "redis, inference, alerts and ingest run as child processes"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, "".join(log)
        time.sleep(0.5)
        leftovers = [pid for pid in family if _alive(pid)]
        assert not leftovers, f"processes left behind: {leftovers}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
