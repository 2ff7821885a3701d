"""The jobs of ``facemask run --prometheus`` match the job selectors of deploy/prometheus
(:mod:`tests.deploy.run_jobs`), and the config it writes is one Prometheus accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facemask.cli.run import SCRAPE_JOBS, prometheus_config
from tests.deploy import run_jobs
from tests.deploy.run_jobs import JobMatcher, job_matchers
from tests.fixtures.paths import REPO_ROOT

PROMTOOL = shutil.which("promtool")


def test_the_jobs_of_a_local_run_match_every_job_selector_of_the_rules() -> None:
    jobs = run_jobs.run_jobs()
    assert sorted(jobs) == sorted(SCRAPE_JOBS.values())  # one job per service, as written
    matchers = run_jobs.deploy_matchers()
    assert JobMatcher("rules.yml", "=~", "facemask-.*") in matchers  # FacemaskTargetDown
    assert run_jobs.check() == []
    target_down = JobMatcher("rules.yml", "=~", "facemask-.*")
    assert all(target_down.matches(job) for job in jobs)  # it can fire for every service


def test_the_check_command_passes_and_is_what_validate_deploy_can_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.deploy.run_jobs"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith(": ok"), proc.stdout


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('up{job=~"facemask-.*"} == 0', [("=~", "facemask-.*")]),
        ("up{job='facemask-alerts', instance!=\"x\"}", [("=", "facemask-alerts")]),
        ("rate(x{job =~ `facemask-in.+`}[5m])", [("=~", "facemask-in.+")]),
        ("up{job = `facemask-alerts`}", [("=", "facemask-alerts")]),
        ('up{job!="facemask-alerts", job!~"other.*"}', []),  # cannot keep a rule from firing
        ('up{exported_job="facemask-alerts"}', []),  # another label
        ('sum by (job) (up) == 0 and on (job) x{job=~"a\\\\.b"}', [("=~", "a\\.b")]),
    ],
)
def test_job_matchers_are_read_from_promql(text: str, found: list[tuple[str, str]]) -> None:
    assert [(m.op, m.value) for m in job_matchers(text, "f")] == found


@pytest.mark.parametrize(
    ("jobs", "matcher", "problem", "count"),
    [
        # What facemask run wrote before: FacemaskTargetDown could never fire locally.
        (
            ["inference", "alerts", "ingest"],
            JobMatcher("rules.yml", "=~", "facemask-.*"),
            'rules.yml: job=~"facemask-.*" matches none of the jobs',
            4,  # and none of the three is named as in prometheus.yml
        ),
        (
            ["facemask-inference"],
            JobMatcher("rules.yml", "=", "facemask-ingest"),
            'rules.yml: job="facemask-ingest" matches none',
            1,
        ),
        (  # anchored like Prometheus: "facemask" does not match "facemask-alerts"
            ["facemask-alerts"],
            JobMatcher("rules.yml", "=~", "facemask"),
            'rules.yml: job=~"facemask" matches none',
            1,
        ),
        (
            ["facemask-alerts", "facemask-extra"],
            JobMatcher("rules.yml", "=~", "facemask-.*"),
            "job facemask-extra is no job of prometheus.yml",
            1,
        ),
    ],
)
def test_a_selector_no_local_job_matches_is_reported(
    jobs: list[str], matcher: JobMatcher, problem: str, count: int
) -> None:
    found = run_jobs.problems(jobs, [matcher], run_jobs.compose_jobs())
    assert len(found) == count and problem in found[0], found


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promtool_accepts_the_config_a_local_run_writes(tmp_path: Path) -> None:
    targets = {
        "inference": ["127.0.0.1:9101"],
        "alerts": ["127.0.0.1:9103"],
        "ingest": ["127.0.0.1:9102", "127.0.0.1:9104"],
    }
    path = prometheus_config(targets, tmp_path / "prometheus.yml")
    config = yaml.safe_load(path.read_text())
    assert [
        (j["job_name"], j["static_configs"][0]["targets"]) for j in config["scrape_configs"]
    ] == [(SCRAPE_JOBS[service], hosts) for service, hosts in targets.items()]
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr and "rules.yml" in proc.stdout + proc.stderr
