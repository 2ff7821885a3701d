"""Render the README's configuration and metrics references from the code.

The tables between ``<!-- BEGIN GENERATED: config -->`` / ``<!-- END GENERATED: config -->``
(and ``metrics``) in README.md come from the services' settings classes and metrics
classes, so they cannot drift from what the services read and export. ``--check`` fails
when README.md is out of date (run by ``make lint``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))


def _settings_classes() -> list[tuple[str, Any]]:
    from services.alerts.config import AlertSettings
    from services.inference.config import InferenceSettings
    from services.ingest.config import IngestSettings

    return [("inference", InferenceSettings), ("ingest", IngestSettings), ("alerts", AlertSettings)]


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value in ("", [], {}):
        return "(empty)"
    return f"`{value}`"


def config_table() -> str:
    """One table per service: variable, default, meaning."""
    from facemask.infra.settings import ServiceSettings

    out = [
        "Shared settings (`REDIS_URL`, `STREAM_PREFIX`, `STREAM_PARTITIONS`, `LOG_LEVEL`,"
        " `LOG_FORMAT`) can also be given once for every service as `FACEMASK_<NAME>`"
        " (e.g. `FACEMASK_REDIS_URL`); the service-specific variable wins. Unknown"
        " variables with a service prefix are an error at start.",
        "",
    ]
    shared = ServiceSettings.SHARED_FIELDS
    for name, cls in _settings_classes():
        out += [f"#### {name} (`{cls.env_prefix()}*`)", "", "| variable | default | meaning |"]
        out.append("|---|---|---|")
        for field_name, field in cls.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            if field_name in shared:
                meaning += " (also `FACEMASK_" + field_name.upper() + "`)"
            out.append(
                f"| `{cls.env_prefix()}{field_name.upper()}` | {_default(field)} | {meaning} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def metrics_table() -> str:
    """Every metric each service exports: name, type, labels, help."""
    from prometheus_client.metrics import MetricWrapperBase

    from services.alerts.metrics import AlertMetrics
    from services.inference.metrics import InferenceMetrics
    from services.ingest.metrics import IngestMetrics

    out = ["| service | metric | type | labels | meaning |", "|---|---|---|---|---|"]
    for service, factory in (
        ("inference", InferenceMetrics),
        ("ingest", IngestMetrics),
        ("alerts", AlertMetrics),
    ):
        metrics = factory(CollectorRegistry())
        rows = []
        found = list(vars(metrics).values())
        for value in list(found):  # a group of metrics (the supervisor's) one level down
            if not isinstance(value, MetricWrapperBase) and hasattr(value, "__dict__"):
                found += list(vars(value).values())
        seen: set[int] = set()
        for metric in found:
            if not isinstance(metric, MetricWrapperBase) or id(metric) in seen:
                continue
            seen.add(id(metric))
            kind = metric._type
            name = metric._name + ("_total" if kind == "counter" else "")
            labels = ", ".join(metric._labelnames) or "-"
            doc = metric._documentation.replace("|", "\\|")
            rows.append(f"| {service} | `{name}` | {kind} | {labels} | {doc} |")
        out += sorted(rows)
    return "\n".join(out) + "\n"


def render(text: str) -> str:
    """README text with every generated block replaced."""
    for name, body in (("config", config_table()), ("metrics", metrics_table())):
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", re.S
        )
        if not pattern.search(text):
            raise SystemExit(f"README.md has no generated block {name!r}")
        text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
    return text


def main() -> int:
    """Write README.md, or with ``--check`` fail when it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            sys.stderr.write("README.md reference tables are stale: run `make docs`\n")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
