"""Offline validation of the deployment files (Kubernetes, compose, Prometheus, Grafana).

Used by ``tests/deploy/test_deploy.py`` and by ``scripts/validate_deploy.sh``
(``python -m tests.deploy.checks k8s|metrics``). Every check returns a list of problems
(empty: valid) instead of raising, so one run reports everything that is wrong.

Kubernetes: every overlay / component combination is rendered with ``kubectl kustomize``.
Standard kinds are validated strictly (``kubernetes-validate --strict``: unknown fields are
errors) against the oldest and the newest Kubernetes version we support; a document whose
kind has no schema is an error too (kubernetes-validate only warns, so a typo in ``kind``
would pass). Custom resources (KEDA ``ScaledObject`` / ``TriggerAuthentication``) have no
schema in kubernetes-validate: they get a structural check here, plus a consistency check
against the real stream layout (``facemask.contracts.streams``). Then semantic checks: references
resolve, selectors match, pods meet the restricted Pod Security Standard, one autoscaler
per workload, every ``FACEMASK_*`` variable names a real setting.

Metrics: the set of series names the services export is collected by instantiating their
metrics classes in a fresh registry; every metric named in a dashboard query or a rule
expression must be in it.
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
K8S_DIR = DEPLOY_DIR / "k8s"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = DEPLOY_DIR / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = DEPLOY_DIR / "prometheus" / "rules.yml"
PROMETHEUS_RULE_TESTS = DEPLOY_DIR / "prometheus" / "rules_test.yml"
GRAFANA_DIR = DEPLOY_DIR / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

# Oldest supported cluster (native gRPC probes are GA since 1.27) and the newest schema.
KUBERNETES_VERSIONS = ("1.28.0", "latest")

# Components that cannot be combined: two autoscalers would fight over one Deployment.
COMPONENT_CONFLICTS = (frozenset({"keda", "hpa"}),)

# Secrets an overlay expects to exist in the cluster (created from a secret manager), by
# overlay; anything else a workload references must be in the rendered output.
EXTERNAL_SECRETS = {
    "base": frozenset({"facemask-redis", "facemask-cameras", "facemask-alerts-auth"}),
    "dev": frozenset(),
    "prod": frozenset({"facemask-redis", "facemask-cameras", "facemask-alerts-auth"}),
}

# Custom resources we ship and the structural check that stands in for a schema.
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

# Series Prometheus itself produces for every target; rules may use them.
PROMETHEUS_SYNTHETIC_METRICS = frozenset({"up"})

# The alert service's metrics as the issue specifies them, used until
# services/alerts/metrics.py exists (then the real class is the source of truth).
ALERTS_METRICS_FROM_ISSUE = (
    ("facemask_alerts", "counter"),
    ("facemask_compliance_ratio", "gauge"),
    ("facemask_faces_seen", "counter"),
    ("facemask_sink_deliveries", "counter"),
    ("facemask_alerts_outbox_depth", "gauge"),
)

# Environment variables read outside the settings classes (facemask/model/store.py).
NON_SETTINGS_FACEMASK_ENV = frozenset(
    {
        "FACEMASK_MODEL_DIR",
        "FACEMASK_MODEL_MIRROR",
        "FACEMASK_MODEL_MANIFEST",
        "FACEMASK_VARIANT_CACHE_DIR",
    }
)


# --------------------------------------------------------------------------- metrics


def exposed_names(family_name: str, family_type: str) -> set[str]:
    """Series names a prometheus_client metric family appears under in /metrics."""
    if family_type == "counter":
        return {f"{family_name}_total", f"{family_name}_created"}
    if family_type == "histogram":
        return {f"{family_name}_{s}" for s in ("bucket", "sum", "count", "created")}
    if family_type == "summary":
        return {family_name, f"{family_name}_sum", f"{family_name}_count"} | {
            f"{family_name}_created"
        }
    if family_type == "info":
        return {f"{family_name}_info"}
    return {family_name}


def registry_names(registry: Any) -> set[str]:
    """Every series name the collectors of ``registry`` can expose (labelled or not)."""
    names: set[str] = set()
    for family in registry.collect():
        names |= exposed_names(family.name, family.type)
    return names


def alerts_metric_source() -> str:
    """``module`` when services/alerts/metrics.py defines the metrics, else ``issue``."""
    return "module" if importlib.util.find_spec("services.alerts.metrics") else "issue"


def _alerts_metric_names() -> set[str]:
    from prometheus_client import CollectorRegistry

    if alerts_metric_source() == "issue":
        names: set[str] = set()
        for name, kind in ALERTS_METRICS_FROM_ISSUE:
            names |= exposed_names(name, kind)
        return names
    module = importlib.import_module("services.alerts.metrics")
    names = set()
    for attr in dir(module):
        cls = getattr(module, attr)
        if not (isinstance(cls, type) and attr.endswith("Metrics")):
            continue
        if getattr(cls, "__module__", "") != module.__name__:
            continue
        registry = CollectorRegistry()
        try:
            cls(registry)
        except TypeError:
            cls(registry=registry)
        names |= registry_names(registry)
    if not names:
        raise RuntimeError("services/alerts/metrics.py defines no *Metrics class to collect")
    return names


@functools.cache
def service_metric_names() -> dict[str, frozenset[str]]:
    """Series names each service exports, from its metrics class in a fresh registry."""
    from prometheus_client import CollectorRegistry

    from services.inference.metrics import InferenceMetrics
    from services.ingest.metrics import IngestMetrics

    inference = CollectorRegistry()
    InferenceMetrics(inference)
    ingest = CollectorRegistry()
    IngestMetrics(ingest)
    return {
        "inference": frozenset(registry_names(inference)),
        "ingest": frozenset(registry_names(ingest)),
        "alerts": frozenset(_alerts_metric_names()),
    }


def all_exported_metrics() -> frozenset[str]:
    """Union of every service's series names."""
    return frozenset().union(*service_metric_names().values())


_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "atan2",
        "inf",
        "nan",
    }
)
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(
    r"(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
)


class PromQLError(ValueError):
    """An expression the name extractor cannot read reliably."""


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (Grafana variables allowed) selects."""
    if "__name__" in expr:
        raise PromQLError(f"selecting metrics by __name__ is not checkable: {expr!r}")
    text = _GRAFANA_VARIABLE.sub("", expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    if any(c in text for c in "{}[]"):
        raise PromQLError(f"unbalanced braces or brackets in {expr!r}")
    names: set[str] = set()
    for match in _TOKEN.finditer(text):
        ident = match.group("ident")
        if ident is None or ident.lower() in _PROMQL_KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # function or aggregation operator
        names.add(ident)
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?\w+\s*\)\s*$")


def grafana_query_metric_names(query: str) -> set[str]:
    """Metric names of a Grafana Prometheus variable query (``label_values(...)``)."""
    match = _LABEL_VALUES.match(query)
    if match:
        selector = match.group("selector")
        return promql_metric_names(selector) if selector else set()
    if re.match(r"^\s*(?:label_names|metrics)\(", query):
        raise PromQLError(f"unsupported variable query {query!r}")
    if re.match(r"^\s*query_result\((?P<q>.*)\)\s*$", query):
        return promql_metric_names(query.strip()[len("query_result(") : -1])
    return promql_metric_names(query)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every Prometheus query of a dashboard, variables included."""
    found: list[tuple[str, str]] = []

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append(
                    (f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"])
                )
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if query:
            found.append((f"variable {variable.get('name')!r}", f"@variable {query}"))
    return found


def metric_problems(
    queries: Iterable[tuple[str, str]], known: Iterable[str], allowed_extra: Iterable[str] = ()
) -> list[str]:
    """Queries that name a metric outside ``known``; ``[]`` when every name is known."""
    known_set = set(known) | set(allowed_extra)
    problems = []
    for where, expr in queries:
        try:
            if expr.startswith("@variable "):
                names = grafana_query_metric_names(expr.removeprefix("@variable "))
            else:
                names = promql_metric_names(expr)
        except PromQLError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not names:
            problems.append(f"{where}: names no metric: {expr!r}")
        for name in sorted(names - known_set):
            problems.append(f"{where}: metric {name!r} is exported by no service ({expr!r})")
    return problems


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON under deploy/grafana/dashboards (raises on invalid JSON)."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def rule_queries(path: Path = PROMETHEUS_RULES) -> list[tuple[str, str]]:
    """(where, expression) of every alerting / recording rule."""
    data = yaml.safe_load(path.read_text())
    found = []
    for group in data["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            found.append((f"rule {name}", rule["expr"]))
    return found


def recorded_series(path: Path = PROMETHEUS_RULES) -> set[str]:
    """Series created by recording rules (usable in dashboards like exported metrics)."""
    data = yaml.safe_load(path.read_text())
    return {r["record"] for g in data["groups"] for r in g["rules"] if "record" in r}


def rule_annotation_problems(path: Path = PROMETHEUS_RULES) -> list[str]:
    """Alerts without a summary or a runbook line, or without a severity."""
    data = yaml.safe_load(path.read_text())
    problems = []
    for group in data["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            annotations = rule.get("annotations", {})
            for key in ("summary", "runbook"):
                value = annotations.get(key, "")
                if not value.strip() or "\n" in value.strip():
                    problems.append(f"alert {rule['alert']}: annotations.{key} must be one line")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problems.append(f"alert {rule['alert']}: labels.severity critical|warning|info")
    return problems


def check_metrics() -> list[str]:
    """Dashboards parse and name exported metrics; rules name exported metrics."""
    known = all_exported_metrics() | recorded_series()
    problems = []
    dashboards = load_dashboards()
    if not dashboards:
        problems.append(f"no dashboard JSON in {DASHBOARD_DIR}")
    for name, dashboard in dashboards.items():
        queries = dashboard_queries(dashboard)
        if not queries:
            problems.append(f"{name}: no Prometheus query found")
        problems += [f"{name}: {p}" for p in metric_problems(queries, known)]
    problems += [
        f"rules.yml: {p}"
        for p in metric_problems(rule_queries(), known, PROMETHEUS_SYNTHETIC_METRICS)
    ]
    problems += [f"rules.yml: {p}" for p in rule_annotation_problems()]
    return problems


# --------------------------------------------------------------------------- kustomize


@dataclass(frozen=True)
class Combination:
    """An overlay (or the bare base) plus extra components."""

    overlay: str  # "base" or the name of a directory in overlays/
    components: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join((self.overlay, *self.components))

    @property
    def directory(self) -> Path:
        return K8S_DIR / "base" if self.overlay == "base" else K8S_DIR / "overlays" / self.overlay


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}


def component_names() -> list[str]:
    """Every directory of deploy/k8s/components."""
    return sorted(p.name for p in (K8S_DIR / "components").iterdir() if p.is_dir())


def overlay_names() -> list[str]:
    """Every directory of deploy/k8s/overlays."""
    return sorted(p.name for p in (K8S_DIR / "overlays").iterdir() if p.is_dir())


def included_components(directory: Path) -> set[str]:
    """Names of the components a kustomization already includes."""
    return {Path(c).name for c in _kustomization(directory).get("components", [])}


def conflicting(components: Iterable[str]) -> bool:
    """Whether the set holds a pair that must not be combined."""
    chosen = set(components)
    return any(pair <= chosen for pair in COMPONENT_CONFLICTS)


def combinations() -> list[Combination]:
    """The base and every overlay, each with every compatible subset of extra components."""
    result = []
    for overlay in ["base", *overlay_names()]:
        directory = K8S_DIR / "base" if overlay == "base" else K8S_DIR / "overlays" / overlay
        own = included_components(directory)
        extra = [c for c in component_names() if c not in own]
        for size in range(len(extra) + 1):
            for subset in itertools.combinations(extra, size):
                if not conflicting(own | set(subset)):
                    result.append(Combination(overlay, subset))
    return result


def kubectl() -> str | None:
    """Path of kubectl, or None."""
    return shutil.which("kubectl")


def _rebase(entry: str, source: Path, target: Path) -> str:
    """A kustomization path entry of ``source`` rewritten for a copy living in ``target``."""
    if "://" in entry or entry.startswith("/"):
        return entry
    resolved = (source / entry).resolve()
    if resolved.is_relative_to(source.resolve()):
        return entry  # copied along
    return os.path.relpath(resolved, target)


@functools.cache
def render(combination: Combination) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of the combination; raises ``RuntimeError`` with kustomize's
    message on failure.

    Extra components are added the way a user adds them: to the overlay's own
    ``components:`` list (so the overlay's namespace, images and name references apply to
    them). The overlay is copied to a temporary directory for that, its paths rebased.
    """
    with tempfile.TemporaryDirectory(prefix="facemask-kustomize-") as tmp:
        target = copy_kustomization(combination.directory, Path(tmp))
        kustomization = _kustomization(target)
        kustomization.setdefault("components", [])
        kustomization["components"] += [
            os.path.relpath(K8S_DIR / "components" / c, target) for c in combination.components
        ]
        if not kustomization["components"]:
            del kustomization["components"]
        (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        try:
            return kustomize_build(target)
        except RuntimeError as exc:
            raise RuntimeError(f"kubectl kustomize {combination.name} failed: {exc}") from None


def copy_kustomization(source: Path, parent: Path) -> Path:
    """A copy of the kustomization directory ``source`` in ``parent``, its relative paths
    rebased so that it renders as the original (to change it without touching the repo)."""
    target = parent / source.name
    shutil.copytree(source, target)
    kustomization = _kustomization(source)
    for key in ("resources", "components"):
        if key in kustomization:
            kustomization[key] = [_rebase(e, source, target) for e in kustomization[key] or []]
    (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return target


def kustomize_build(directory: Path) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize DIRECTORY``; RuntimeError with kustomize's message on failure."""
    exe = kubectl()
    if exe is None:
        raise RuntimeError("kubectl not found")
    proc = subprocess.run(
        [exe, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def is_crd(doc: dict[str, Any]) -> bool:
    """Whether the document is a custom resource (validated structurally, not by schema)."""
    group = doc.get("apiVersion", "").partition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def ident(doc: dict[str, Any]) -> str:
    """kind/name of a document."""
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


@functools.cache
def _validate_cached(doc_json: str, version: str) -> str | None:
    import kubernetes_validate.utils as kv

    doc = json.loads(doc_json)
    wanted = kv.latest_version() if version == "latest" else version
    try:
        kv.validate(doc, wanted, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return f"{ident(doc)} (k8s {exc.version}): {path}: {exc.message}"
    except kv.SchemaNotFoundError as exc:
        return f"{ident(doc)}: {exc.message} (a typo in kind/apiVersion, or a CRD to declare)"
    return None


def schema_problems(docs: Iterable[dict[str, Any]]) -> list[str]:
    """Strict kubernetes-validate of every standard document, for each supported version."""
    problems = []
    for doc in docs:
        if is_crd(doc):
            continue
        doc_json = json.dumps(doc, sort_keys=True)
        for version in KUBERNETES_VERSIONS:
            problem = _validate_cached(doc_json, version)
            if problem:
                problems.append(problem)
    return problems


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def crd_problems(docs: Iterable[dict[str, Any]]) -> list[str]:
    """Structural check of the custom resources (no schema available offline)."""
    problems = []
    for doc in docs:
        if not is_crd(doc):
            continue
        where = ident(doc)
        if (doc.get("apiVersion"), doc.get("kind")) not in CRD_KINDS:
            problems.append(f"{where}: unknown custom resource {doc.get('apiVersion')}")
            continue
        if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
            problems.append(f"{where}: unexpected top-level keys {sorted(set(doc))}")
        if not doc.get("metadata", {}).get("name"):
            problems.append(f"{where}: metadata.name missing")
        spec = doc.get("spec") or {}
        if doc["kind"] == "TriggerAuthentication":
            refs = spec.get("secretTargetRef") or []
            if not refs:
                problems.append(f"{where}: spec.secretTargetRef is empty")
            for ref in refs:
                if not (_is_str_map(ref) and {"parameter", "name", "key"} <= set(ref)):
                    problems.append(f"{where}: secretTargetRef needs parameter, name, key: {ref}")
            continue
        known = {
            "scaleTargetRef",
            "minReplicaCount",
            "maxReplicaCount",
            "pollingInterval",
            "cooldownPeriod",
            "idleReplicaCount",
            "initialCooldownPeriod",
            "advanced",
            "fallback",
            "triggers",
        }
        if set(spec) - known:
            problems.append(f"{where}: unknown spec keys {sorted(set(spec) - known)}")
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            problems.append(f"{where}: spec.scaleTargetRef.name missing")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            problems.append(f"{where}: need 0 <= minReplicaCount <= maxReplicaCount")
        triggers = spec.get("triggers") or []
        if not triggers:
            problems.append(f"{where}: spec.triggers is empty")
        names = [t.get("name") for t in triggers if t.get("name")]
        if len(names) != len(set(names)):
            problems.append(f"{where}: trigger names must be unique")
        for trigger in triggers:
            if set(trigger) - {"type", "name", "metadata", "authenticationRef", "metricType"}:
                problems.append(f"{where}: unknown trigger keys {sorted(trigger)}")
            if not trigger.get("type"):
                problems.append(f"{where}: trigger without type")
            # KEDA's trigger metadata is map[string]string: a bare number or bool is rejected.
            if not _is_str_map(trigger.get("metadata")):
                problems.append(
                    f"{where}: trigger {trigger.get('name')}: metadata values must be strings"
                )
    return problems


# --------------------------------------------------------------------------- semantics


def _docs_by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def _pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"unsupported selector {selector}")
    if selector.get("matchExpressions"):
        raise ValueError("matchExpressions are not checked; use matchLabels")
    wanted = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _named(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _object_keys(doc: dict[str, Any]) -> set[str]:
    return set(doc.get("data", {}) or {}) | set(doc.get("stringData", {}) or {})


def reference_problems(docs: list[dict[str, Any]], external: frozenset[str]) -> list[str]:
    """Secrets, ConfigMaps, ServiceAccounts and scale targets referenced but not rendered."""
    problems = []
    objects = {"Secret": _named(docs, "Secret"), "ConfigMap": _named(docs, "ConfigMap")}
    accounts = _named(docs, "ServiceAccount")

    def need(kind: str, name: str, key: str | None, optional: bool, where: str) -> None:
        found = objects[kind].get(name)
        if found is None:
            if not optional and not (kind == "Secret" and name in external):
                problems.append(f"{where}: {kind} {name!r} is not defined")
            return
        if key is not None and key not in _object_keys(found):
            problems.append(f"{where}: {kind} {name!r} has no key {key!r}")

    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        pod = _pod_template(doc)["spec"]
        where = ident(doc)
        account = pod.get("serviceAccountName")
        if not account or account not in accounts:
            problems.append(f"{where}: serviceAccountName {account!r} is not defined")
        for container in _containers(pod):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                for ref_key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    if ref_key in source:
                        ref = source[ref_key]
                        need(kind, ref["name"], ref["key"], ref.get("optional", False), where)
            for env_from in container.get("envFrom", []):
                for ref_key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                    if ref_key in env_from:
                        ref = env_from[ref_key]
                        need(kind, ref["name"], None, ref.get("optional", False), where)
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                ref = volume["secret"]
                need("Secret", ref["secretName"], None, ref.get("optional", False), where)
            if "configMap" in volume:
                ref = volume["configMap"]
                need("ConfigMap", ref["name"], None, ref.get("optional", False), where)
    for doc in _docs_by_kind(docs, "TriggerAuthentication"):
        for ref in doc["spec"].get("secretTargetRef", []):
            need("Secret", ref["name"], ref["key"], False, ident(doc))
    auths = _named(docs, "TriggerAuthentication")
    for doc in _docs_by_kind(docs, "ScaledObject"):
        for trigger in doc["spec"].get("triggers", []):
            auth = (trigger.get("authenticationRef") or {}).get("name")
            if auth and auth not in auths:
                problems.append(f"{ident(doc)}: TriggerAuthentication {auth!r} is not defined")
    return problems


def _scale_target(doc: dict[str, Any]) -> tuple[str, str]:
    ref = doc["spec"]["scaleTargetRef"]
    return ref.get("kind", "Deployment"), ref["name"]


def autoscaler_problems(docs: list[dict[str, Any]]) -> list[str]:
    """One autoscaler per workload, an existing target, and no fixed replica count on it."""
    problems = []
    owners: dict[tuple[str, str], list[str]] = {}
    for doc in [
        *_docs_by_kind(docs, "HorizontalPodAutoscaler"),
        *_docs_by_kind(docs, "ScaledObject"),
    ]:
        owners.setdefault(_scale_target(doc), []).append(ident(doc))
    for (kind, name), scalers in owners.items():
        target = _named(docs, kind).get(name)
        if target is None:
            problems.append(f"{', '.join(scalers)}: scale target {kind}/{name} is not defined")
            continue
        if len(scalers) > 1:
            problems.append(f"{kind}/{name} has several autoscalers: {', '.join(scalers)}")
        if "replicas" in target["spec"]:
            problems.append(f"{kind}/{name}: spec.replicas is set but {scalers[0]} owns it")
    return problems


def selector_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Services and PDBs select pods; targetPorts exist; workloads do not overlap."""
    problems = []
    workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
    for doc in workloads:
        labels = _pod_template(doc)["metadata"].get("labels", {})
        if not _matches(doc["spec"]["selector"], labels):
            problems.append(f"{ident(doc)}: selector does not match its own pod template")
        for other in workloads:
            if other is doc:
                continue
            if _matches(
                doc["spec"]["selector"], _pod_template(other)["metadata"].get("labels", {})
            ):
                problems.append(f"{ident(doc)}: selector also matches the pods of {ident(other)}")
    for svc in _docs_by_kind(docs, "Service"):
        selector = svc["spec"].get("selector")
        if not selector:
            continue
        pods = [
            _pod_template(w)["spec"]
            for w in workloads
            if _matches({"matchLabels": selector}, _pod_template(w)["metadata"].get("labels", {}))
        ]
        if not pods:
            problems.append(f"{ident(svc)}: selector {selector} matches no pod")
            continue
        port_names = {
            p.get("name") for pod in pods for c in pod["containers"] for p in c.get("ports", [])
        }
        port_numbers = {
            p["containerPort"]
            for pod in pods
            for c in pod["containers"]
            for p in c.get("ports", [])
        }
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if target not in port_names and target not in port_numbers:
                problems.append(f"{ident(svc)}: targetPort {target!r} is no container port")
    for pdb in _docs_by_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]
        if not any(
            _matches(selector, _pod_template(w)["metadata"].get("labels", {})) for w in workloads
        ):
            problems.append(f"{ident(pdb)}: selector matches no pod")
    return problems


def _image_pinned(image: str) -> bool:
    name = image.rsplit("/", 1)[-1]
    if "@sha256:" in image:
        return True
    return ":" in name and not name.endswith(":latest")


def pod_security_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The restricted Pod Security Standard plus our own rules (read-only root, resources,
    probes, no service account token, pinned images)."""
    problems = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        where = ident(doc)
        pod = _pod_template(doc)["spec"]
        ctx = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                problems.append(f"{where}: {key} is not allowed")
        if any("hostPath" in v for v in pod.get("volumes", [])):
            problems.append(f"{where}: hostPath volumes are not allowed")
        if (ctx.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        if ctx.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")
        for container in _containers(pod):
            cwhere = f"{where} container {container['name']}"
            sc = container.get("securityContext") or {}
            if sc.get("runAsUser", ctx.get("runAsUser")) is None:
                # the image's USER would decide: state the non-root uid instead
                problems.append(f"{cwhere}: runAsUser not set")
            if not (sc.get("runAsNonRoot") or ctx.get("runAsNonRoot")):
                problems.append(f"{cwhere}: runAsNonRoot must be true")
            if sc.get("runAsUser") == 0:
                problems.append(f"{cwhere}: runAsUser 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{cwhere}: capabilities must drop ALL and add none")
            resources = container.get("resources", {})
            for section, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for key in keys:
                    if key not in resources.get(section, {}):
                        problems.append(f"{cwhere}: resources.{section}.{key} missing")
            if not _image_pinned(container.get("image", "")):
                problems.append(f"{cwhere}: image {container.get('image')!r} is not pinned")
            if container in pod.get("containers", []):
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{cwhere}: {probe} missing")
    return problems


def inference_probe_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The inference pods use native gRPC probes on the gRPC port with the right services."""
    from services.inference.server import LIVENESS, SERVICE_NAME

    problems = []
    deployment = _named(docs, "Deployment").get("inference")
    if deployment is None:
        return ["Deployment/inference is not defined"]
    container = _pod_template(deployment)["spec"]["containers"][0]
    grpc_port = next(
        (p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"), None
    )
    want = {"livenessProbe": LIVENESS, "readinessProbe": SERVICE_NAME, "startupProbe": LIVENESS}
    for probe, service in want.items():
        spec = container.get(probe, {}).get("grpc")
        if spec is None:
            problems.append(f"inference {probe}: not a grpc probe")
        elif spec.get("port") != grpc_port or spec.get("service") != service:
            problems.append(
                f"inference {probe}: want grpc port {grpc_port} service {service!r}, got {spec}"
            )
    service = _named(docs, "Service").get("inference")
    if service is None or service["spec"].get("clusterIP") != "None":
        problems.append("Service/inference must be headless (clusterIP: None) for round_robin")
    return problems


def _config_values(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """Environment of a container as far as the rendered documents define it."""
    values: dict[str, str] = {}
    configmaps = _named(docs, "ConfigMap")
    secrets = _named(docs, "Secret")
    for env_from in container.get("envFrom", []):
        if "configMapRef" in env_from and env_from["configMapRef"]["name"] in configmaps:
            values.update(configmaps[env_from["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in env_from and env_from["secretRef"]["name"] in secrets:
            secret = secrets[env_from["secretRef"]["name"]]
            for key, value in (secret.get("data") or {}).items():
                values[key] = base64.b64decode(value).decode()
            values.update(secret.get("stringData") or {})
    for env in container.get("env", []):
        values[env["name"]] = env.get("value", "<from valueFrom>")
    return values


def settings_class(service: str) -> type | None:
    """The settings class of a service (None: the alert service has none yet)."""
    if service == "inference":
        from services.inference.config import InferenceSettings

        return InferenceSettings
    if service == "ingest":
        from services.ingest.config import IngestSettings

        return IngestSettings
    if importlib.util.find_spec("services.alerts.config") is None:
        return None
    from facemask.infra.settings import ServiceSettings

    module = importlib.import_module("services.alerts.config")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, ServiceSettings)
            and value.env_prefix() == "FACEMASK_ALERTS_"
        ):
            return value
    return None


def env_name_problems(service: str, names: Iterable[str], where: str) -> list[str]:
    """``FACEMASK_*`` variables that no setting reads (a typo fails the service at start,
    or, without the service prefix, is silently ignored)."""
    from facemask.infra.settings import GLOBAL_PREFIX, ServiceSettings

    cls = settings_class(service)
    shared = {GLOBAL_PREFIX + f.upper() for f in ServiceSettings.SHARED_FIELDS}
    problems = []
    facemask_names = sorted(n for n in names if n.upper().startswith(GLOBAL_PREFIX))
    if cls is not None:
        env = dict.fromkeys(facemask_names, "")
        problems += [f"{where}: {n} is no {service} setting" for n in cls.unknown_env(env)]
        prefix = cls.env_prefix()
    else:
        prefix = f"FACEMASK_{service.upper()}_"
    for name in facemask_names:
        upper = name.upper()
        if upper.startswith(prefix) or upper in NON_SETTINGS_FACEMASK_ENV:
            continue
        if upper not in shared:
            problems.append(f"{where}: {name} is neither a shared setting nor {prefix}*")
    return problems


def camera_spec_problems(spec: str, where: str) -> list[str]:
    """A ``--camera`` spec the ingest node would reject at start (unknown key, bad fps...).

    The source is parsed without checking that a local path exists (it exists in the
    image, not here); ``$(VAR)`` placeholders Kubernetes expands are replaced first.
    """
    from facemask.infra.settings import ConfigError
    from services.ingest.config import CameraConfig, parse_camera_spec
    from services.ingest.sources import parse_source

    text = re.sub(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", "node-1", spec)
    try:
        raw = parse_camera_spec(text)
        parse_source(raw["source"], check_exists=False)
        CameraConfig.model_validate({**raw, "source": "rtsp://camera.invalid/stream"})
    except (ConfigError, ValueError) as exc:
        return [f"{where}: camera {spec!r}: {exc}".splitlines()[0]]
    return []


def _camera_args(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--camera"]


def _service_of(container: dict[str, Any]) -> str | None:
    image = container.get("image", "")
    for service in ("inference", "ingest", "alerts"):
        if re.search(rf"(^|/)facemask/{service}(:|@|$)", image):
            return service
    return None


def k8s_env_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every FACEMASK_* variable given to a facemask container names a real setting."""
    problems = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in _pod_template(doc)["spec"]["containers"]:
            service = _service_of(container)
            if service is None:
                continue
            values = _config_values(docs, container)
            problems += env_name_problems(service, values, ident(doc))
            if service != "ingest":
                continue
            try:
                specs = _camera_specs(docs, container)
            except ValueError as exc:
                problems.append(f"{ident(doc)}: FACEMASK_INGEST_CAMERAS is not JSON: {exc}")
                continue
            for spec in specs:
                problems += camera_spec_problems(spec, ident(doc))
    return problems


def _camera_specs(docs: list[dict[str, Any]], container: dict[str, Any]) -> list[str]:
    """The ``--camera`` specs of an ingest container: its arguments plus the JSON list of
    ``FACEMASK_INGEST_CAMERAS`` when its Secret is rendered (ValueError: not JSON)."""
    specs = _camera_args(container.get("args", []))
    cameras = _secret_value(docs, container, "FACEMASK_INGEST_CAMERAS")
    if cameras is not None:
        specs += [c for c in json.loads(cameras) if isinstance(c, str)]
    return specs


def _secret_value(docs: list[dict[str, Any]], container: dict[str, Any], name: str) -> str | None:
    """Value of an env var taken from a Secret key, when that Secret is rendered."""
    secrets = _named(docs, "Secret")
    for env in container.get("env", []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if env["name"] == name and ref and ref["name"] in secrets:
            data = secrets[ref["name"]].get("data") or {}
            if ref["key"] in data:
                return base64.b64decode(data[ref["key"]]).decode()
    return None


def keda_problems(docs: list[dict[str, Any]]) -> list[str]:
    """redis-streams triggers cover exactly the frame streams of the configured layout, for
    the inference consumer group, with both a lag and a pending-entries trigger."""
    from facemask.contracts.streams import StreamLayout
    from services.inference.config import InferenceSettings

    problems = []
    for scaled in _docs_by_kind(docs, "ScaledObject"):
        kind, name = _scale_target(scaled)
        target = _named(docs, kind).get(name)
        if target is None:
            continue  # reported by autoscaler_problems
        container = _pod_template(target)["spec"]["containers"][0]
        env = _config_values(docs, container)
        layout = StreamLayout(
            env.get("FACEMASK_STREAM_PREFIX", "facemask"),
            int(env.get("FACEMASK_STREAM_PARTITIONS", "4")),
        )
        group = env.get(
            "FACEMASK_INFERENCE_CONSUMER_GROUP",
            InferenceSettings.model_fields["consumer_group"].default,
        )
        expected = set(layout.all_frames())
        by_mode: dict[str, set[str]] = {"lagCount": set(), "pendingEntriesCount": set()}
        for trigger in scaled["spec"].get("triggers", []):
            if trigger.get("type") != "redis-streams":
                continue
            meta = trigger.get("metadata", {})
            where = f"{ident(scaled)} trigger {trigger.get('name')}"
            if meta.get("consumerGroup") != group:
                problems.append(
                    f"{where}: consumerGroup {meta.get('consumerGroup')!r} != {group!r}"
                )
            if meta.get("stream") not in expected:
                problems.append(f"{where}: stream {meta.get('stream')!r} is no frame partition")
            modes = [m for m in by_mode if m in meta]
            if len(modes) != 1:
                problems.append(f"{where}: exactly one of lagCount / pendingEntriesCount")
            for mode in modes:
                by_mode[mode].add(meta.get("stream"))
            if "lagCount" in meta and "activationLagCount" not in meta:
                problems.append(f"{where}: lagCount needs activationLagCount")
            address_env = meta.get("addressFromEnv")
            if address_env and address_env not in env:
                problems.append(f"{where}: addressFromEnv {address_env} not in the target's env")
            if not address_env and not meta.get("address") and not meta.get("host"):
                problems.append(f"{where}: no Redis address")
        for mode, streams in by_mode.items():
            missing = sorted(expected - streams)
            if missing:
                problems.append(f"{ident(scaled)}: no {mode} trigger for {', '.join(missing)}")
    return problems


def cpu_quantity(value: Any) -> float:
    """A Kubernetes CPU quantity (``2``, ``"1.5"``, ``"500m"``) in CPUs."""
    text = str(value).strip()
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    return float(text)


THREADS_ENV = "FACEMASK_INFERENCE_THREADS"
"""The inference setting of TensorFlow's compute threads (``threads`` of
services/inference/config.py: intra-op threads; inter-op stays 1). Unset, TensorFlow sizes
its pools to every core of the node, whatever the container's CPU limit."""


def threads_problem(threads: Any, cpu_limit: Any, where: str) -> str | None:
    """A thread count that is not the CPU limit rounded up (None: they match)."""
    if cpu_limit is None:
        return f"{where}: no CPU limit, so {THREADS_ENV} cannot follow it"
    if threads is None:
        return (
            f"{where}: {THREADS_ENV} not set: TensorFlow would size its thread pools to every "
            f"core of the host instead of the CPU limit {cpu_limit}"
        )
    want = math.ceil(cpu_quantity(cpu_limit))
    try:
        got = int(str(threads))
    except ValueError:
        return f"{where}: {THREADS_ENV}={threads!r} is not a whole number"
    if got != want:
        return f"{where}: {THREADS_ENV}={got} but the CPU limit {cpu_limit} is {want} CPUs"
    return None


def inference_thread_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every inference container sets its model threads from its own CPU limit: the
    downward API (``resourceFieldRef`` ``limits.cpu``, divisor 1: rounded up) or a fixed
    value equal to the limit."""
    problems = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in _pod_template(doc)["spec"]["containers"]:
            if _service_of(container) != "inference":
                continue
            where = f"{ident(doc)} container {container['name']}"
            limit = (container.get("resources") or {}).get("limits", {}).get("cpu")
            env = next((e for e in container.get("env", []) if e["name"] == THREADS_ENV), None)
            field = ((env or {}).get("valueFrom") or {}).get("resourceFieldRef")
            if field is not None:
                if limit is None:
                    problems.append(f"{where}: no CPU limit, so {THREADS_ENV} cannot follow it")
                if field.get("resource") != "limits.cpu":
                    problems.append(f"{where}: {THREADS_ENV} must come from limits.cpu")
                if field.get("containerName", container["name"]) != container["name"]:
                    problems.append(f"{where}: {THREADS_ENV} reads another container's limit")
                if str(field.get("divisor", "1")) != "1":
                    problems.append(f"{where}: {THREADS_ENV} needs divisor 1 (whole CPUs)")
                continue
            problem = threads_problem((env or {}).get("value"), limit, where)
            if problem:
                problems.append(problem)
    return problems


# Port of each URL scheme when the URL names none: the alert sinks (http(s) webhooks and
# Slack; MQTT 1883 and over TLS 8883, services/alerts/sinks/mqtt.py) and the cameras
# (services/ingest/sources.py URL_SCHEMES).
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "mqtt": 1883,
    "mqtts": 8883,
    "rtsp": 554,
    "rtsps": 322,
    "rtmp": 1935,
    "rtmps": 443,
}
UDP_SCHEMES = frozenset({"udp", "srt"})

ALERT_SINK_URL_SETTINGS = ("webhook_url", "slack_webhook_url", "mqtt_url")
"""Settings of the alert service naming a sink the pod connects out to (a test checks that
every other ``*_url`` setting is not one)."""

SINK_EXAMPLE_ENV = "alerts-sinks.env.example"
"""An overlay's example of its Secret facemask-alerts-sinks (``KEY=VALUE`` lines): the sinks
it is meant to reach, checked against its NetworkPolicies like rendered settings."""


def url_endpoint(url: str) -> tuple[str, int] | None:
    """(protocol, port) a URL connects to; None when neither the URL nor its scheme says."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if port is None:
        return None
    return ("UDP" if scheme in UDP_SCHEMES else "TCP", port)


def _egress_policies(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    policies = []
    for policy in _docs_by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else [])
        if "Egress" in types and _matches(spec.get("podSelector") or {}, labels):
            policies.append(policy)
    return policies


def egress_allows(
    docs: list[dict[str, Any]], labels: dict[str, str], protocol: str, port: int
) -> bool:
    """Whether the rendered NetworkPolicies let pods with ``labels`` connect out of the
    cluster to ``port``: no policy isolates their egress, or a rule allows that port to
    any peer or to an address block (rules whose peers are only pods or namespaces do not
    reach an outside sink or camera)."""
    policies = _egress_policies(docs, labels)
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to") or []
            if peers and not any("ipBlock" in peer for peer in peers):
                continue
            ports = rule.get("ports")
            if not ports:
                return True
            for allowed in ports:
                if allowed.get("protocol", "TCP") != protocol:
                    continue
                start = allowed.get("port")
                if start is None:
                    return True
                if isinstance(start, int) and start <= port <= allowed.get("endPort", start):
                    return True
    return False


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _sink_urls(values: dict[str, str]) -> list[tuple[str, str]]:
    cls = settings_class("alerts")
    prefix = cls.env_prefix() if cls is not None else "FACEMASK_ALERTS_"
    found = []
    for setting in ALERT_SINK_URL_SETTINGS:
        value = values.get(prefix + setting.upper(), "")
        if "://" in value:
            found.append((prefix + setting.upper(), value))
    return found


def egress_port_problems(docs: list[dict[str, Any]], overlay_dir: Path | None = None) -> list[str]:
    """The alert service's NetworkPolicies let it reach the port of every sink configured
    (rendered ConfigMaps / Secrets, literal env, and the overlay's example of its sinks
    Secret); the ingest pods reach every network camera they are given. A port missing
    there would be blocked silently: the sink fails, the camera stays offline."""
    problems = []
    example = overlay_dir / SINK_EXAMPLE_ENV if overlay_dir is not None else None
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        labels = _pod_template(doc)["metadata"].get("labels", {})
        for container in _pod_template(doc)["spec"]["containers"]:
            service = _service_of(container)
            targets: list[tuple[str, str]] = []
            if service == "alerts":
                targets = _sink_urls(_config_values(docs, container))
                if example is not None and example.is_file():
                    targets += [
                        (f"{name} ({example.name})", url)
                        for name, url in _sink_urls(read_env_file(example))
                    ]
            elif service == "ingest":
                from services.ingest.config import parse_camera_spec

                try:
                    specs = _camera_specs(docs, container)
                except ValueError:
                    continue  # reported by k8s_env_problems
                for spec in specs:
                    try:
                        source = parse_camera_spec(spec).get("source", "")
                    except ValueError:
                        continue
                    if "://" in source:
                        targets.append((f"camera {spec.split(',', 1)[0]}", source))
            for name, url in targets:
                endpoint = url_endpoint(url)
                host = url.split("://", 1)[1].rsplit("@", 1)[-1].split("/", 1)[0]
                if endpoint is None:
                    problems.append(f"{ident(doc)}: {name}: no port known for {host}")
                elif not egress_allows(docs, labels, *endpoint):
                    problems.append(
                        f"{ident(doc)}: {name} connects to {host} ({endpoint[0]} "
                        f"{endpoint[1]}), which no NetworkPolicy egress rule allows; add the "
                        "port (deploy/README.md, 'Sink and camera ports')"
                    )
    return problems


INGRESS_CONTROLLER_NAMESPACE = "ingress-nginx"
"""Where the ingress controller runs (components/ingress, the alerts NetworkPolicy)."""


def _ingress_admits(
    docs: list[dict[str, Any]], labels: dict[str, str], namespace: str, ports: set[Any]
) -> bool:
    """Whether the NetworkPolicies let pods of ``namespace`` connect to pods with
    ``labels`` on one of ``ports`` (a container port's number and name)."""
    policies = []
    for policy in _docs_by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" in types and _matches(spec.get("podSelector") or {}, labels):
            policies.append(policy)
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            from_namespace = not peers or any(
                "podSelector" not in peer
                and (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                == {"kubernetes.io/metadata.name": namespace}
                for peer in peers
            )
            rule_ports = {p.get("port") for p in rule.get("ports") or []}
            if from_namespace and (not rule.get("ports") or rule_ports & ports):
                return True
    return False


def ingress_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every Ingress backend is a rendered Service port whose pods admit the ingress
    controller's namespace on the target port."""
    problems = []
    services = _named(docs, "Service")
    workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
    for ingress in _docs_by_kind(docs, "Ingress"):
        for rule in ingress["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backend = path["backend"]["service"]
                where = f"{ident(ingress)} {rule.get('host', '*')}{path.get('path', '')}"
                service = services.get(backend["name"])
                if service is None:
                    problems.append(f"{where}: Service {backend['name']!r} is not defined")
                    continue
                wanted = backend["port"].get("name", backend["port"].get("number"))
                port = next(
                    (
                        p
                        for p in service["spec"].get("ports", [])
                        if wanted in (p.get("name"), p["port"])
                    ),
                    None,
                )
                if port is None:
                    problems.append(f"{where}: Service {backend['name']} has no port {wanted!r}")
                    continue
                target = port.get("targetPort", port["port"])
                for workload in workloads:
                    labels = _pod_template(workload)["metadata"].get("labels", {})
                    if not _matches({"matchLabels": service["spec"].get("selector", {})}, labels):
                        continue
                    numbers = {
                        p["containerPort"]
                        for c in _pod_template(workload)["spec"]["containers"]
                        for p in c.get("ports", [])
                        if target in (p.get("name"), p["containerPort"])
                    }
                    if not _ingress_admits(
                        docs, labels, INGRESS_CONTROLLER_NAMESPACE, numbers | {target}
                    ):
                        problems.append(
                            f"{where}: the NetworkPolicies of {ident(workload)} do not admit "
                            f"the namespace {INGRESS_CONTROLLER_NAMESPACE} on port {target}"
                        )
    return problems


def semantic_problems(combination: Combination, docs: list[dict[str, Any]]) -> list[str]:
    """Everything beyond the schema."""
    external = EXTERNAL_SECRETS.get(combination.overlay, frozenset())
    names = [ident(d) + "@" + d.get("metadata", {}).get("namespace", "") for d in docs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    problems = [f"{n} is defined twice" for n in duplicates]
    for doc in docs:
        if (
            doc.get("kind") != "Namespace"
            and combination.overlay != "base"
            and not doc.get("metadata", {}).get("namespace")
        ):
            problems.append(f"{ident(doc)}: no namespace in overlay {combination.overlay}")
    return [
        *problems,
        *reference_problems(docs, external),
        *autoscaler_problems(docs),
        *selector_problems(docs),
        *pod_security_problems(docs),
        *inference_probe_problems(docs),
        *k8s_env_problems(docs),
        *keda_problems(docs),
        *inference_thread_problems(docs),
        *k8s_variant_cache_problems(docs),
        *egress_port_problems(docs, combination.directory),
        *ingress_problems(docs),
    ]


def check_combination(combination: Combination) -> list[str]:
    """All problems of one rendered combination."""
    try:
        docs = list(render(combination))
    except RuntimeError as exc:
        return [str(exc)]
    return [
        *schema_problems(docs),
        *crd_problems(docs),
        *semantic_problems(combination, docs),
    ]


# --------------------------------------------------------------------------- images

INFERENCE_DOCKERFILE = REPO_ROOT / "services" / "inference" / "Dockerfile"
VARIANT_CACHE_ENV = "FACEMASK_VARIANT_CACHE_DIR"
"""The auto runtime's writable directory for its measurements (facemask.model.variants)."""


@dataclass(frozen=True)
class Stage:
    """One stage of a Dockerfile: its base, its name and its instructions (keyword, rest),
    continuation lines joined, comments dropped."""

    base: str
    name: str
    instructions: tuple[tuple[str, str], ...]

    def commands(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order (instructions before the first FROM dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    base, name, body = "", "", []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(body)))
            words = [w for w in rest.split() if not w.startswith("--platform")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            body = []
        elif base:
            body.append((keyword, " ".join(rest.split())))
    if base:
        stages.append(Stage(base, name, tuple(body)))
    return stages


def image_env(path: Path, name: str, stage: str = "runtime") -> str | None:
    """The value an ``ENV`` of the stage gives ``name`` (``KEY=VALUE`` form)."""
    for candidate in dockerfile_stages(path):
        if candidate.name != stage:
            continue
        for env in candidate.commands("ENV"):
            for token in env.split():
                key, sep, value = token.partition("=")
                if sep and key == name:
                    return value
    return None


def variant_cache_dir() -> str:
    """The inference image's variant cache directory (its ENV)."""
    value = image_env(INFERENCE_DOCKERFILE, VARIANT_CACHE_ENV)
    if not value:
        raise ValueError(f"{INFERENCE_DOCKERFILE}: no ENV {VARIANT_CACHE_ENV} in the runtime stage")
    return value


def k8s_variant_cache_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Inference containers with a read-only root filesystem mount a volume at the image's
    variant cache directory (else the auto runtime falls back to /tmp, or measures the
    model variants at every start)."""
    problems = []
    target = variant_cache_dir()
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in _pod_template(doc)["spec"]["containers"]:
            if _service_of(container) != "inference":
                continue
            if not (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
                continue
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            wanted = env.get(VARIANT_CACHE_ENV) or target
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if wanted not in mounts:
                problems.append(
                    f"{ident(doc)} container {container['name']}: read-only root and no volume "
                    f"at {wanted} ({VARIANT_CACHE_ENV}): the model variants are measured again "
                    "at every container start"
                )
    return problems


def compose_variant_cache_problems(services: dict[str, Any]) -> list[str]:
    """The compose inference service (read_only) mounts a volume at the variant cache."""
    service = services.get("inference") or {}
    if not service.get("read_only"):
        return []
    wanted = (service.get("environment") or {}).get(VARIANT_CACHE_ENV) or variant_cache_dir()
    targets = {str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)}
    if wanted in targets:
        return []
    return [
        f"inference: read_only and no volume at {wanted} ({VARIANT_CACHE_ENV}): the model "
        "variants are measured again at every container start"
    ]


# --------------------------------------------------------------------------- compose


def compose_problems(path: Path = COMPOSE_FILE) -> list[str]:
    """Checks beyond the compose spec: healthchecks behind every depends_on, required
    secrets, existing build files and mounts, valid FACEMASK_* names."""
    data = yaml.safe_load(path.read_text())
    text = path.read_text()
    services = data.get("services", {})
    problems = []
    for secret in (*COMPOSE_REDIS_SECRETS, "MQTT_PASSWORD", "GRAFANA_ADMIN_PASSWORD", ALERTS_TOKEN):
        if f"${{{secret}:?" not in text:
            problems.append(f"{secret} must be required with ${{{secret}:?...}}")
    for required in (
        "redis",
        "inference",
        "alerts",
        "ingest",
        "mosquitto",
        "prometheus",
        "grafana",
    ):
        if required not in services:
            problems.append(f"service {required} missing")
    problems += compose_root_problems(services)
    problems += compose_variant_cache_problems(services)
    for name, service in services.items():
        for dep, condition in (service.get("depends_on") or {}).items():
            one_shot = str(services.get(dep, {}).get("restart", "")) == "no"
            if one_shot and condition.get("condition") == "service_completed_successfully":
                continue  # a set-up step (redis-acl): it exits, it is never healthy
            if condition.get("condition") != "service_healthy":
                problems.append(f"{name}: depends_on {dep} must wait for service_healthy")
            if "healthcheck" not in services.get(dep, {}):
                problems.append(f"{name}: depends_on {dep}, which has no healthcheck")
        if "healthcheck" not in service:
            problems.append(f"{name}: no healthcheck")
        build = service.get("build")
        if build and not (REPO_ROOT / build.get("context", ".") / build["dockerfile"]).is_file():
            problems.append(f"{name}: Dockerfile {build['dockerfile']} not found")
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and not (REPO_ROOT / source).exists():
                problems.append(f"{name}: mounted path {source} does not exist")
        image = str(service.get("image", ""))
        for facemask_service in ("inference", "ingest", "alerts"):
            if f"/{facemask_service}:" in image:
                env = service.get("environment") or {}
                if "entrypoint" not in service:  # runs the service, not another module
                    problems += env_name_problems(facemask_service, env, f"compose {name}")
                if facemask_service == "ingest":
                    for spec in _camera_args(list(service.get("command") or [])):
                        problems += camera_spec_problems(spec, f"compose {name}")
                if service.get("user") != "10001:10001" or not service.get("read_only"):
                    problems.append(f"{name}: must run as 10001:10001 with read_only: true")
        environment = service.get("environment") or {}
        for key, value in environment.items():
            secret_like = re.search(r"PASSWORD|SECRET|TOKEN|_AUTH$", key.upper())
            if secret_like and not str(value).startswith("${"):
                problems.append(f"{name}: {key} must come from the environment (${{VAR:?}})")
    return problems


COMPOSE_REDIS_SECRETS = (
    "REDIS_INGEST_PASSWORD",
    "REDIS_INFERENCE_PASSWORD",
    "REDIS_ALERTS_PASSWORD",
)
ALERTS_TOKEN = "FACEMASK_ALERTS_API_TOKEN"
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "ash", "dash"}


def _uid(user: Any) -> str:
    return str(user).split(":", 1)[0].strip()


def compose_root_problems(services: dict[str, Any]) -> list[str]:
    """No container runs as root: every service names a non-root ``user:`` (an image's
    default user is not trusted, and an entrypoint that drops root is skipped by a shell
    wrapper); Redis runs redis-server itself."""
    problems = []
    for name, service in services.items():
        user = service.get("user")
        if user is None:
            problems.append(f"{name}: must set user: (a non-root uid:gid)")
        elif _uid(user) in ("0", "root", ""):
            problems.append(f"{name}: runs as root (user: {user})")
        security = service.get("security_opt") or []
        if "no-new-privileges:true" not in security:
            problems.append(f"{name}: needs security_opt no-new-privileges:true")
    redis = services.get("redis", {})
    command = redis.get("command") or []
    argv0 = command[0] if isinstance(command, list) and command else None
    if argv0 != "redis-server":
        problems.append("redis: command must run redis-server itself (no shell wrapper)")
    if "--aclfile" not in command:
        problems.append("redis: needs --aclfile (one ACL user per service)")
    return problems


def prometheus_target_problems() -> list[str]:
    """Every host Prometheus scrapes is a compose service or network alias."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    hosts = set(compose["services"]) | {"localhost"}
    for service in compose["services"].values():
        for network in (service.get("networks") or {}).values():
            hosts |= set((network or {}).get("aliases", []))
    problems = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                if target.rsplit(":", 1)[0] not in hosts:
                    problems.append(f"job {job['job_name']}: {target} is no compose service")
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                if name not in hosts:
                    problems.append(f"job {job['job_name']}: {name} is no compose alias")
    return problems


class ComposeError(ValueError):
    """A compose file that cannot be interpolated (a required variable is unset...)."""


_COMPOSE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPOSE_BRACED = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S
)


def compose_interpolate(text: str, env: dict[str, str]) -> str:
    """A compose value with its variables substituted the way ``docker compose`` does:
    ``$VAR``, ``${VAR}``, ``${VAR:-default}`` / ``${VAR-default}`` (unset or empty / unset),
    ``${VAR:+other}`` / ``${VAR+other}`` (set and non-empty / set), ``${VAR:?error}`` /
    ``${VAR?error}`` (ComposeError), nested in defaults too, and ``$$`` for a literal ``$``."""
    out = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ComposeError(f"unterminated ${{ in {text!r}")
            out.append(_compose_braced(text[i + 2 : j - 1], env))
            i = j
        elif name := _COMPOSE_NAME.match(text, i + 1):
            out.append(env.get(name.group(), ""))
            i = name.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _compose_braced(expr: str, env: dict[str, str]) -> str:
    braced = _COMPOSE_BRACED.fullmatch(expr)
    if braced is None:
        raise ComposeError(f"invalid interpolation ${{{expr}}}")
    name, op, arg = braced.group("name", "op", "arg")
    value = env.get(name)
    if op is None:
        return value or ""
    present = bool(value) if op.startswith(":") else value is not None
    if op.endswith("-"):
        return value if present and value is not None else compose_interpolate(arg, env)
    if op.endswith("+"):
        return compose_interpolate(arg, env) if present else ""
    if present and value is not None:
        return value
    raise ComposeError(f"{name}: {arg or 'required variable is not set'}")


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return compose_interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


# Values of the variables compose requires (${VAR:?}), for rendering the file in checks.
COMPOSE_TEST_ENV = {
    **dict.fromkeys(COMPOSE_REDIS_SECRETS, "test-only-password"),
    "MQTT_PASSWORD": "test-only-password",
    "GRAFANA_ADMIN_PASSWORD": "test-only-password",
    ALERTS_TOKEN: "test-only-token",
}


def compose_config(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as ``docker compose config`` sees it with ``env`` (default: only the
    required secrets set): YAML anchors merged, every value interpolated."""
    data = yaml.safe_load(path.read_text())
    merged = {**COMPOSE_TEST_ENV, **(env or {})}
    return {k: v for k, v in _interpolate_tree(data, merged).items() if not k.startswith("x-")}


MIRROR_CONTEXT_ENV = "FACEMASK_MODEL_MIRROR_CONTEXT"
"""The compose variable naming a local mirror directory laid out like the team's shared/."""
MIRROR_STAGE = "model-mirror"
MIRROR_PATH_IN_BUILD = "/mirror/models"
"""Where the Dockerfiles mount the mirror context (``--mount=...,target=/mirror``) plus
the models directory of the shared/ layout: the build's FACEMASK_MODEL_MIRROR."""


def dockerfile_fetch_groups(dockerfile: Path) -> list[str]:
    """The manifest groups a Dockerfile fetches (``facemask models fetch --group G``)."""
    return re.findall(r"facemask models fetch --group (\w+)", dockerfile.read_text())


def _mirror_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services whose Dockerfile mounts the model-mirror context."""
    found = {}
    for name, service in config["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = REPO_ROOT / build.get("context", ".") / build["dockerfile"]
        if f"from={MIRROR_STAGE}" in dockerfile.read_text():
            found[name] = build
    return found


def compose_mirror_problems(path: Path = COMPOSE_FILE, mirror: str = "../shared") -> list[str]:
    """Every image that fetches model artifacts gets the mirror as a compose build context:
    unset, an existing empty stand-in and no FACEMASK_MODEL_MIRROR (download); set, that
    directory and FACEMASK_MODEL_MIRROR=/mirror/models (copy, same sha256 check)."""
    problems = []
    unset = _mirror_services(compose_config({}, path))
    if not unset:
        problems.append(f"no compose build uses the {MIRROR_STAGE} context")
    for name, build in unset.items():
        dockerfile = (REPO_ROOT / build.get("context", ".") / build["dockerfile"]).read_text()
        if f"AS {MIRROR_STAGE}" not in dockerfile or "ARG FACEMASK_MODEL_MIRROR" not in dockerfile:
            problems.append(f"{name}: its Dockerfile needs the {MIRROR_STAGE} stage and the ARG")
        context = (build.get("additional_contexts") or {}).get(MIRROR_STAGE)
        if context is None:
            problems.append(f"{name}: build.additional_contexts.{MIRROR_STAGE} missing")
        elif not (REPO_ROOT / context).is_dir():
            problems.append(f"{name}: default {MIRROR_STAGE} context {context} is no directory")
        if (build.get("args") or {}).get("FACEMASK_MODEL_MIRROR", ""):
            problems.append(f"{name}: FACEMASK_MODEL_MIRROR must be empty without a mirror")
    for name, build in _mirror_services(compose_config({MIRROR_CONTEXT_ENV: mirror}, path)).items():
        if (build.get("additional_contexts") or {}).get(MIRROR_STAGE) != mirror:
            problems.append(f"{name}: {MIRROR_CONTEXT_ENV} does not become its mirror context")
        if (build.get("args") or {}).get("FACEMASK_MODEL_MIRROR") != MIRROR_PATH_IN_BUILD:
            problems.append(
                f"{name}: with a mirror, FACEMASK_MODEL_MIRROR must be {MIRROR_PATH_IN_BUILD}"
            )
    return problems


def mirror_layout_problems(mirror: Path, path: Path = COMPOSE_FILE) -> list[str]:
    """Every artifact the compose-built images fetch is where the fetch in the image
    looks for it in ``mirror`` (mounted at /mirror, FACEMASK_MODEL_MIRROR=/mirror/models)."""
    from facemask.model.store import _mirror_candidates, load_manifest

    models = mirror / Path(MIRROR_PATH_IN_BUILD).relative_to("/mirror")
    artifacts = load_manifest()
    problems = []
    for name, build in _mirror_services(
        compose_config({MIRROR_CONTEXT_ENV: str(mirror)}, path)
    ).items():
        dockerfile = REPO_ROOT / build.get("context", ".") / build["dockerfile"]
        for group in dockerfile_fetch_groups(dockerfile):
            for artifact in artifacts:
                if artifact.group != group or artifact.optional:
                    continue
                if not any(p.is_file() for p in _mirror_candidates(artifact, [models])):
                    problems.append(f"{name}: {artifact.name} (group {group}) not in {models}")
    return problems


CALIBRATION_STAGE = "calibration"
CALIBRATION_CONTEXT_ENV = "FACEMASK_CALIBRATION_CONTEXT"
"""The compose variable naming a directory of frames calibrating the int8 model."""
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def compose_calibration_problems(path: Path = COMPOSE_FILE, frames: str = "../frames") -> list[str]:
    """Every image whose Dockerfile mounts the calibration stage gets it as a compose build
    context: unset, an existing stand-in without images (the build calibrates on the
    sample images); set, that directory. Each keeps its model-mirror context."""
    problems = []
    users = 0
    for name, service in compose_config({}, path)["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = (REPO_ROOT / build.get("context", ".") / build["dockerfile"]).read_text()
        if f"from={CALIBRATION_STAGE}" not in dockerfile:
            continue
        users += 1
        contexts = build.get("additional_contexts") or {}
        default = contexts.get(CALIBRATION_STAGE)
        if f"AS {CALIBRATION_STAGE}" not in dockerfile:
            problems.append(f"{name}: its Dockerfile needs a {CALIBRATION_STAGE} stage (default)")
        if default is None:
            problems.append(f"{name}: build.additional_contexts.{CALIBRATION_STAGE} missing")
        elif not (REPO_ROOT / default).is_dir():
            problems.append(
                f"{name}: default {CALIBRATION_STAGE} context {default} is no directory"
            )
        elif any(p.suffix.lower() in _IMAGE_SUFFIXES for p in (REPO_ROOT / default).iterdir()):
            problems.append(f"{name}: default {CALIBRATION_STAGE} context {default} holds images")
        if f"from={MIRROR_STAGE}" in dockerfile and MIRROR_STAGE not in contexts:
            problems.append(f"{name}: build.additional_contexts.{MIRROR_STAGE} missing")
    if not users:
        problems.append(f"no compose build uses the {CALIBRATION_STAGE} context")
    configured = compose_config({CALIBRATION_CONTEXT_ENV: frames}, path)["services"]
    for name, service in configured.items():
        contexts = (service.get("build") or {}).get("additional_contexts") or {}
        if CALIBRATION_STAGE in contexts and contexts[CALIBRATION_STAGE] != frames:
            problems.append(f"{name}: {CALIBRATION_CONTEXT_ENV} does not become its context")
    return problems


def compose_thread_problems(
    env: dict[str, str] | None = None, path: Path = COMPOSE_FILE
) -> list[str]:
    """The compose inference service sets its model threads to its CPU limit."""
    service = compose_config(env, path)["services"]["inference"]
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    threads = (service.get("environment") or {}).get(THREADS_ENV)
    problem = threads_problem(threads, limits.get("cpus"), "compose inference")
    return [problem] if problem else []


# --------------------------------------------------------------------------- redis acl

REDIS_ACL_TEMPLATE = DEPLOY_DIR / "redis" / "users.acl"
DEV_OVERLAY = DEPLOY_DIR / "k8s" / "overlays" / "dev"


def acl_problems() -> list[str]:
    """The committed ACL template and the dev overlay's ACL file are what
    ``facemask.infra.redisacl`` generates (the dev file from the dev Secret's passwords)."""
    from urllib.parse import urlsplit

    from facemask.contracts.streams import StreamLayout
    from facemask.infra import redisacl

    problems = []
    layout = StreamLayout()
    if REDIS_ACL_TEMPLATE.read_text() != redisacl.render(layout, redisacl.placeholders()):
        problems.append(
            f"{REDIS_ACL_TEMPLATE} is stale: python -m "
            "facemask.infra.redisacl --placeholders --out deploy/redis/users.acl"
        )
    kustomization = yaml.safe_load((DEV_OVERLAY / "kustomization.yaml").read_text())
    secret = next(s for s in kustomization["secretGenerator"] if s["name"] == "facemask-redis")
    values = dict(item.split("=", 1) for item in secret.get("literals", []))
    env = {
        f"REDIS_{user.upper()}_PASSWORD": urlsplit(values[f"{user}-url"]).password or ""
        for user in ("ingest", "inference", "alerts")
    }
    env["REDIS_KEDA_PASSWORD"] = values.get("keda-password", "")
    for user in ("ingest", "inference", "alerts"):
        if urlsplit(values[f"{user}-url"]).username != user:
            problems.append(f"dev facemask-redis {user}-url must log in as {user}")
    file = next(f for f in secret.get("files", []) if f.startswith("users.acl="))
    acl = DEV_OVERLAY / file.split("=", 1)[1]
    try:
        expected = redisacl.render(layout, redisacl.hashes_from_env(env))
    except ValueError as exc:
        return [*problems, f"dev facemask-redis: {exc}"]
    if acl.read_text() != expected:
        problems.append(f"{acl.relative_to(REPO_ROOT)} does not match the dev passwords")
    return problems


# --------------------------------------------------------------------------- main


def _report(title: str, problems: list[str]) -> int:
    status = "ok" if not problems else f"FAILED ({len(problems)})"
    print(f"  {title}: {status}")
    for problem in problems:
        print(f"    - {problem}")
    return 1 if problems else 0


def local_mirror() -> Path | None:
    """The model mirror a compose build would use here: $FACEMASK_MODEL_MIRROR_CONTEXT, else
    the team's shared/ beside the checkout when it holds the weights (as ``make images``)."""
    configured = os.environ.get(MIRROR_CONTEXT_ENV)
    if configured:
        return Path(configured)
    shared = REPO_ROOT.parent / "shared"
    return shared if (shared / "models" / "face_mask_detection.pb").is_file() else None


def build_problems() -> list[str]:
    """Image builds through compose: the mirror and calibration contexts, the mirror's
    layout (when there is one here), the inference threads against its CPU limit."""
    problems = compose_mirror_problems() + compose_calibration_problems()
    problems += compose_thread_problems()
    mirror = local_mirror()
    if mirror is not None:
        problems += mirror_layout_problems(mirror)
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.deploy.checks [k8s] [metrics] [compose] [acl] [build]`` (default:
    all)."""
    wanted = set(argv if argv is not None else sys.argv[1:]) or {
        "k8s",
        "metrics",
        "compose",
        "acl",
        "build",
    }
    failed = 0
    if "k8s" in wanted:
        if kubectl() is None:
            print("kubectl not found: cannot render the kustomizations", file=sys.stderr)
            return 2
        for combination in combinations():
            failed |= _report(f"kustomize {combination.name}", check_combination(combination))
    if "metrics" in wanted:
        source = alerts_metric_source()
        failed |= _report(f"dashboard and rule metrics (alerts from {source})", check_metrics())
    if "compose" in wanted:
        failed |= _report("compose semantics", compose_problems() + prometheus_target_problems())
    if "acl" in wanted:
        failed |= _report("redis ACL files", acl_problems())
    if "build" in wanted:
        mirror = local_mirror()
        failed |= _report(f"compose builds (mirror: {mirror or 'none here'})", build_problems())
    return failed


if __name__ == "__main__":
    sys.exit(main())
