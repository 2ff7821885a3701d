"""A real Prometheus scrapes the running pipeline with the project's scrape config.

The config is ``deploy/prometheus/prometheus.yml`` with its targets rewritten to the
loopback ports of this test's services (same jobs, same rule file). The test queries
``facemask_frames_processed_total`` and ingest and alert metrics through Prometheus's
HTTP API, and checks that every metric the Grafana dashboard and the alert rules name is
exported by the running services (names read from their live ``/metrics``).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from facemask.dev.localredis import free_port
from facemask.dev.supervisor import ChildSpec, Supervisor
from facemask.dev.waiting import wait_until
from tests.deploy import checks
from tests.fixtures.pipeline import Pipeline, slideshow_dir

pytestmark = [pytest.mark.model, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def _live_names(port: int) -> set[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # declared families, samples or not yet
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= checks.exposed_names(base, kind)
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    reply = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert reply["status"] == "success", reply
    return list(reply["data"]["result"])


def test_prometheus_scrapes_every_service(
    pipeline: Pipeline, tmp_path: Path, samples_dir: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian prometheus is not installed")
    inference = pipeline.start_inference()
    alerts = pipeline.start_alerts()
    folder = slideshow_dir(
        tmp_path / "slides", "lobby", sorted(p.name for p in samples_dir.iterdir())
    )
    ingest = pipeline.start_ingest("ingest-lobby", f"id=lobby,source={folder},fps=4")
    pipeline.wait_ready(inference)
    pipeline.wait_ready(alerts)

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules.yml")]
    loopback = {
        "facemask-inference": [f"127.0.0.1:{inference.ports['metrics']}"],
        "facemask-alerts": [f"127.0.0.1:{alerts.ports['http']}"],
        "facemask-ingest": [f"127.0.0.1:{ingest.ports['metrics']}"],
    }
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in loopback:
            job.pop("dns_sd_configs", None)
            job.pop("file_sd_configs", None)
            job["static_configs"] = [{"targets": loopback[job["job_name"]]}]
            jobs.append(job)
    assert {j["job_name"] for j in jobs} == set(loopback), "the project's jobs are all there"
    config["scrape_configs"] = jobs
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    prom = Supervisor().start(
        ChildSpec(
            "prometheus",
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            log_path=tmp_path / "prometheus.log",
            grace=20,
        )
    )
    try:

        def processed() -> float:
            try:
                rows = _query(port, "sum(facemask_frames_processed_total)")
            except OSError:
                return 0.0
            return float(rows[0]["value"][1]) if rows else 0.0

        wait_until(lambda: processed() > 0, 90, "Prometheus sees processed frames", 1.0)
        wait_until(
            lambda: _query(port, 'facemask_ingest_frames_published_total{camera_id="lobby"}'),
            30,
            "ingest metrics in Prometheus",
            1.0,
        )
        wait_until(
            lambda: _query(port, 'facemask_faces_seen_total{camera_id="lobby"}'),
            30,
            "alert metrics in Prometheus",
            1.0,
        )
        up = {r["metric"]["job"]: r["value"][1] for r in _query(port, "up")}
        assert up == dict.fromkeys(loopback, "1")
        time.sleep(1)
        rules = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).read()
        )
        evaluated = [
            r for g in rules["data"]["groups"] for r in g["rules"] if r.get("health") == "ok"
        ]
        assert evaluated, "the project's alert rules load and evaluate"

        live = (
            _live_names(inference.ports["metrics"])
            | _live_names(alerts.ports["http"])
            | _live_names(ingest.ports["metrics"])
        )
        queries = checks.rule_queries()
        for name, dashboard in checks.load_dashboards().items():
            queries += [(f"{name}: {w}", q) for w, q in checks.dashboard_queries(dashboard)]
        problems = checks.metric_problems(
            queries, live, allowed_extra=checks.recorded_series() | {"up"}
        )
        assert not problems, "\n".join(problems)
    finally:
        prom.stop()
