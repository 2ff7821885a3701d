"""The Prometheus jobs of ``facemask run --prometheus`` against the job selectors of
``deploy/prometheus``: the rules must be able to fire on a local run too.

``python -m tests.deploy.run_jobs`` prints the problems and exits 1 (0: none); it is what
``scripts/validate_deploy.sh`` runs, and ``tests/deploy/test_run_jobs.py`` tests it.

* The job names are read from the config file that ``facemask run`` writes
  (:func:`facemask.cli.run.prometheus_config`), not from a list kept here.
* Every positive job matcher (``job="..."``, ``job=~"..."``) in ``rules.yml`` and in
  ``prometheus.yml`` (PromQL in any string value) must match at least one of those jobs,
  else its rule can never fire locally (``FacemaskTargetDown`` once matched
  ``facemask-.*`` while the local jobs were ``alerts``, ``inference`` and ``ingest``).
  Negative matchers (``!=``, ``!~``) cannot keep a rule from firing and are skipped.
* Every job of ``facemask run`` must be a job of ``prometheus.yml`` (the compose
  Prometheus), so that a matcher written for compose means the same locally.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facemask.cli.run import SCRAPE_JOBS, prometheus_config
from tests.deploy.checks import PROMETHEUS_CONFIG, PROMETHEUS_RULES

# A label matcher on ``job`` with a PromQL string: "...", '...' or `...` (raw).
_MATCHER = re.compile(
    r"""(?<![\w!])job\s*(?P<op>=~|=(?![=~]))\s*"""
    r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|`(?P<raw>[^`]*)`)"""
)


@dataclass(frozen=True)
class JobMatcher:
    """One ``job`` matcher found in a deployment file."""

    source: str  # file name
    op: str  # "=" or "=~"
    value: str  # the string's value (escapes resolved)

    def matches(self, job: str) -> bool:
        """Whether Prometheus would select ``job`` (regexes are anchored at both ends)."""
        if self.op == "=":
            return job == self.value
        return re.fullmatch(self.value, job) is not None

    def __str__(self) -> str:
        return f'{self.source}: job{self.op}"{self.value}"'


def run_jobs() -> list[str]:
    """The job names in the Prometheus config that ``facemask run --prometheus`` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = prometheus_config(
            {service: ["127.0.0.1:9"] for service in SCRAPE_JOBS}, Path(tmp) / "prometheus.yml"
        )
        config = yaml.safe_load(path.read_text())
    return [str(job["job_name"]) for job in config["scrape_configs"]]


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def job_matchers(text: str, source: str) -> list[JobMatcher]:
    """The positive ``job`` matchers of the PromQL in ``text``."""
    found = []
    for match in _MATCHER.finditer(text):
        if match.group("raw") is not None:
            value = match.group("raw")
        else:
            value = re.sub(r"\\(.)", r"\1", match.group("dq") or match.group("sq") or "")
        found.append(JobMatcher(source, match.group("op"), value))
    return found


def deploy_matchers(
    files: Iterable[Path] = (PROMETHEUS_RULES, PROMETHEUS_CONFIG),
) -> list[JobMatcher]:
    """The ``job`` matchers in every string value of ``files`` (YAML)."""
    found = []
    for path in files:
        for text in _strings(yaml.safe_load(path.read_text())):
            found += job_matchers(text, path.name)
    return found


def compose_jobs(path: Path = PROMETHEUS_CONFIG) -> set[str]:
    """The job names of the compose Prometheus config."""
    return {str(job["job_name"]) for job in yaml.safe_load(path.read_text())["scrape_configs"]}


def problems(jobs: list[str], matchers: list[JobMatcher], known: set[str]) -> list[str]:
    """What keeps a rule from firing on a local run (see the module docstring)."""
    found = [
        f"{matcher} matches none of the jobs of facemask run --prometheus ({', '.join(jobs)}): "
        "name them in facemask.cli.run.SCRAPE_JOBS"
        for matcher in matchers
        if not any(matcher.matches(job) for job in jobs)
    ]
    found += [
        f"facemask run --prometheus job {job} is no job of {PROMETHEUS_CONFIG.name} "
        f"({', '.join(sorted(known))})"
        for job in jobs
        if job not in known
    ]
    return found


def check() -> list[str]:
    """:func:`problems` of the real files."""
    return problems(run_jobs(), deploy_matchers(), compose_jobs())


def main() -> int:
    """Print the problems (or ``ok``); 1 when there is any."""
    found = check()
    jobs = ", ".join(run_jobs())
    print(
        f"  facemask run --prometheus jobs ({jobs}) against deploy/prometheus job matchers: "
        + ("ok" if not found else f"FAILED ({len(found)})")
    )
    for problem in found:
        print(f"    - {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
