"""Deployment files validate offline: Kubernetes (every overlay / component combination),
docker-compose, Prometheus config and rules, Grafana dashboards, Dockerfiles.

The checks live in :mod:`tests.deploy.checks` (also run by ``scripts/validate_deploy.sh``);
each has a negative test here, so a checker that lets everything through fails.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks

REPO = checks.REPO_ROOT
KUBECTL = checks.kubectl()
PROMTOOL = shutil.which("promtool")
VENV_BIN = Path(sys.executable).parent

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is a dev dependency: pip install -e .[dev])")
    return found


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


# --------------------------------------------------------------------------- kubernetes

COMBINATIONS = checks.combinations()


def test_matrix_covers_every_overlay_and_component() -> None:
    names = {c.name for c in COMBINATIONS}
    assert "base" in names
    for overlay in checks.overlay_names():
        assert overlay in names
    for component in checks.component_names():
        assert any(component in c.components for c in COMBINATIONS), component
    assert {"dev", "prod"} <= set(checks.overlay_names())
    assert {"redis", "keda", "hpa", "ingest-daemonset"} <= set(checks.component_names())
    # keda and hpa never together, not even through an overlay that includes one of them
    for combination in COMBINATIONS:
        own = checks.included_components(combination.directory)
        assert not checks.conflicting(own | set(combination.components)), combination.name


@needs_kubectl
@pytest.mark.parametrize("combination", COMBINATIONS, ids=[c.name for c in COMBINATIONS])
def test_kustomize_combination_is_valid(combination: checks.Combination) -> None:
    assert checks.check_combination(combination) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", "dev", "prod"])
def test_kubernetes_validate_cli_strict(overlay: str, tmp_path: Path) -> None:
    """The CI command itself: `kubernetes-validate --strict` on the rendered non-CRD docs."""
    docs = checks.render(checks.Combination(overlay, ()))
    standard = [d for d in docs if not checks.is_crd(d)]
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(standard))
    proc = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARN" not in proc.stdout and "ERROR" not in proc.stdout, proc.stdout
    if overlay == "prod":
        assert any(checks.is_crd(d) for d in docs), "prod autoscales with KEDA"


def _docs(name: str = "dev", *components: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(checks.render(checks.Combination(name, components))))


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_schema_check_rejects_unknown_fields_and_kinds() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "bogus": True},
    }
    typo = {"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "x"}}
    problems = checks.schema_problems([service, typo])
    assert any("bogus" in p for p in problems)
    assert any("Deploymnt" in p and "schema" in p for p in problems)
    del service["spec"]["bogus"]
    assert checks.schema_problems([service]) == []


def test_crd_check_rejects_malformed_keda_objects() -> None:
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "inference"},
            "minReplicaCount": 3,
            "maxReplicaCount": 2,
            "triggers": [{"type": "redis-streams", "metadata": {"lagCount": 5}}],
        },
    }
    problems = checks.crd_problems([scaled, {"apiVersion": "example.com/v1", "kind": "Foo"}])
    assert any("metadata values must be strings" in p for p in problems)
    assert any("minReplicaCount" in p for p in problems)
    assert any("unknown custom resource" in p for p in problems)


@needs_kubectl
def test_semantic_checks_catch_broken_manifests() -> None:
    docs = _docs("dev")
    combination = checks.Combination("dev", ())
    assert checks.semantic_problems(combination, docs) == []

    inference = _find(docs, "Deployment", "inference")
    container = inference["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del inference["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    alerts_pod = _find(docs, "Deployment", "alerts")["spec"]["template"]["spec"]
    alerts_pod["containers"][0]["securityContext"]["runAsUser"] = 0
    container["env"].append({"name": "FACEMASK_INFERENCE_THREDS", "value": "2"})
    container["env"].append({"name": "FACEMASK_STREAM_PARTITONS", "value": "2"})
    container["readinessProbe"] = {"grpc": {"port": 50051}}
    container["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "no-such-secret"
    _find(docs, "Service", "alerts")["spec"]["selector"] = {"app.kubernetes.io/name": "nope"}
    cameras = next(d for d in docs if d["metadata"]["name"].startswith("facemask-cameras"))
    cameras["data"]["lobby"] = base64.b64encode(b'["id=lobby,source=0,fsp=5"]').decode()
    problems = "\n".join(checks.semantic_problems(combination, docs))
    assert "readOnlyRootFilesystem" in problems
    assert "Deployment/inference container inference: runAsUser not set" in problems
    assert "Deployment/alerts container alerts: runAsUser 0" in problems
    assert "FACEMASK_INFERENCE_THREDS is no inference setting" in problems
    assert "FACEMASK_STREAM_PARTITONS is neither a shared setting" in problems
    assert "inference readinessProbe" in problems
    assert "Secret 'no-such-secret' is not defined" in problems
    assert "Service/alerts: selector" in problems
    assert "Deployment/ingest-lobby: camera 'id=lobby,source=0,fsp=5'" in problems


@needs_kubectl
def test_two_autoscalers_on_inference_are_reported() -> None:
    docs = _docs("base", "hpa", "keda")  # a combination the matrix leaves out on purpose
    problems = checks.autoscaler_problems(docs)
    assert any("several autoscalers" in p for p in problems)
    with_replicas = _docs("base", "hpa")
    _find(with_replicas, "Deployment", "inference")["spec"]["replicas"] = 2
    assert any("spec.replicas" in p for p in checks.autoscaler_problems(with_replicas))


@needs_kubectl
def test_keda_triggers_follow_the_stream_layout() -> None:
    from facemask.contracts.streams import StreamLayout

    docs = _docs("prod")
    assert checks.keda_problems(docs) == []
    scaled = _find(docs, "ScaledObject", "inference")
    streams = {t["metadata"]["stream"] for t in scaled["spec"]["triggers"]}
    assert streams == set(StreamLayout("facemask", 4).all_frames())
    config = next(d for d in docs if d["metadata"]["name"].startswith("facemask-config"))
    config["data"]["FACEMASK_STREAM_PARTITIONS"] = "8"
    problems = checks.keda_problems(docs)
    assert any("facemask:{p7}:frames" in p for p in problems)


@needs_kubectl
def test_prod_expects_only_the_documented_external_secrets() -> None:
    docs = _docs("prod")
    problems = checks.reference_problems(docs, frozenset())
    missing = {re.search(r"Secret '([^']+)'", p).group(1) for p in problems}
    assert missing == checks.EXTERNAL_SECRETS["prod"]
    readme = (checks.DEPLOY_DIR / "README.md").read_text()
    for secret in missing:
        assert secret in readme


# --------------------------------------------------------------------------- compose


def test_compose_matches_the_compose_spec() -> None:
    proc = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(checks.COMPOSE_FILE),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_semantics() -> None:
    assert checks.compose_problems() == []
    assert checks.prometheus_target_problems() == []


def test_camera_spec_check() -> None:
    assert checks.camera_spec_problems("id=door,source=rtsp://cam/s?a=1,b=2,fps=5", "x") == []
    assert checks.camera_spec_problems("id=$(NODE_NAME),source=/dev/video0", "x") == []
    assert "unknown key 'fsp'" in checks.camera_spec_problems("id=a,source=0,fsp=5", "x")[0]
    assert checks.camera_spec_problems("id=a,source=0,fps=500", "x")
    assert checks.camera_spec_problems("id=a b,source=0", "x")


def test_compose_checker_rejects_unhealthy_dependencies(tmp_path: Path) -> None:
    data = yaml.safe_load(checks.COMPOSE_FILE.read_text())
    data["services"]["inference"]["depends_on"] = {"redis": {"condition": "service_started"}}
    data["services"]["inference"]["environment"]["FACEMASK_INFERENCE_BATCH"] = "8"
    data["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "hunter22"
    data["services"]["ingest"]["command"] = ["--camera", "id=x,source=0,fsp=5"]
    del data["services"]["redis"]["healthcheck"]
    data["services"]["redis"]["user"] = "0:0"
    data["services"]["redis"]["command"] = ["sh", "-c", "exec redis-server"]
    del data["services"]["grafana"]["user"]
    data["services"]["mosquitto"]["security_opt"] = []
    broken = tmp_path / "docker-compose.yml"
    text = yaml.safe_dump(data, width=10_000)
    text = text.replace("REDIS_INGEST_PASSWORD:?", "REDIS_INGEST_PASSWORD:-")
    broken.write_text(text)
    problems = "\n".join(checks.compose_problems(broken))
    assert "must wait for service_healthy" in problems
    assert "which has no healthcheck" in problems
    assert "FACEMASK_INFERENCE_BATCH is no inference setting" in problems
    assert "GF_SECURITY_ADMIN_PASSWORD must come from the environment" in problems
    assert "REDIS_INGEST_PASSWORD must be required" in problems
    assert "redis: runs as root (user: 0:0)" in problems
    assert "grafana: must set user:" in problems
    assert "mosquitto: needs security_opt no-new-privileges:true" in problems
    assert "redis: command must run redis-server itself" in problems
    assert "redis: needs --aclfile" in problems
    assert "unknown key 'fsp'" in problems


# --------------------------------------------------------------------------- prometheus


@needs_promtool
def test_promtool_check_config() -> None:
    proc = _run(PROMTOOL, "check", "config", str(checks.PROMETHEUS_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    proc = _run(PROMTOOL, "check", "rules", str(checks.PROMETHEUS_RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    proc = _run(PROMTOOL, "test", "rules", str(checks.PROMETHEUS_RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_cover_the_required_alerts_with_runbooks() -> None:
    rules = yaml.safe_load(checks.PROMETHEUS_RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for required in (
        "FacemaskCameraOffline",
        "FacemaskCameraNotAnalysed",
        "FacemaskInferenceLagGrowing",
        "FacemaskFramesSkipped",
        "FacemaskSinkFailures",
        "FacemaskLowCompliance",
    ):
        assert required in alerts
    assert checks.rule_annotation_problems() == []
    tested = yaml.safe_load(checks.PROMETHEUS_RULE_TESTS.read_text())
    covered = {
        case["alertname"] for test in tested["tests"] for case in test.get("alert_rule_test", [])
    }
    assert {
        "FacemaskCameraOffline",
        "FacemaskCameraNotAnalysed",
        "FacemaskLowCompliance",
        "FacemaskSinkFailures",
    } <= covered


# --------------------------------------------------------------------------- metrics


def test_exported_metric_names_follow_client_conventions() -> None:
    names = checks.service_metric_names()
    assert "facemask_frames_processed_total" in names["inference"]
    assert "facemask_frames_processed" not in names["inference"]
    assert "facemask_inference_batch_size_bucket" in names["inference"]
    assert "facemask_inference_batch_size" not in names["inference"]
    assert "facemask_stream_lag" in names["inference"]
    assert "facemask_ingest_frames_dropped_total" in names["ingest"]
    for alert_metric in (
        "facemask_alerts_total",
        "facemask_compliance_ratio",
        "facemask_faces_seen_total",
        "facemask_sink_deliveries_total",
        "facemask_alerts_outbox_depth",
    ):
        assert alert_metric in names["alerts"]


def test_promql_metric_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{camera_id=~"$camera"}'
        "[$__rate_interval]))) / on (x) group_left (y) b_total offset 5m"
        ' > bool 1e3 and ignoring (z) c unless label_replace(d, "dst", "$1", "src", "(.*)")'
        " - sum without (q) (e[5m:1m]) * 0x1f"
    )
    assert checks.promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d", "e"}
    assert checks.promql_metric_names("absent(up)") == {"up"}
    assert checks.grafana_query_metric_names("label_values(f_fps, camera_id)") == {"f_fps"}
    assert checks.grafana_query_metric_names("label_values(camera_id)") == set()
    with pytest.raises(checks.PromQLError):
        checks.promql_metric_names('{__name__=~"facemask_.*"}')


def test_metric_checker_rejects_unknown_metrics() -> None:
    dashboard = {
        "panels": [
            {
                "title": "row",
                "panels": [
                    {
                        "title": "ghost",
                        "targets": [{"refId": "A", "expr": "rate(facemask_ghost_total[5m])"}],
                    }
                ],
            },
            {"title": "ok", "targets": [{"refId": "A", "expr": "facemask_stream_lag"}]},
            {"title": "bare", "targets": [{"refId": "A", "expr": "facemask_frames_processed"}]},
        ],
        "templating": {"list": [{"type": "query", "name": "v", "query": "label_values(x_y, l)"}]},
    }
    problems = checks.metric_problems(
        checks.dashboard_queries(dashboard), checks.all_exported_metrics()
    )
    text = "\n".join(problems)
    assert "'facemask_ghost_total' is exported by no service" in text
    assert "'facemask_frames_processed' is exported by no service" in text  # _total missing
    assert "'x_y'" in text
    assert "facemask_stream_lag" not in text
    assert len(problems) == 3


def test_dashboards_and_rules_name_only_exported_metrics() -> None:
    assert checks.check_metrics() == []


def test_dashboard_panels_cover_the_issue() -> None:
    dashboards = checks.load_dashboards()
    assert list(dashboards) == ["facemask.json"]
    exprs = " ".join(e for _, e in checks.dashboard_queries(dashboards["facemask.json"]))
    for metric in (
        "facemask_ingest_capture_fps",  # per-camera fps
        "facemask_frames_skipped_total",  # skipped frames
        "facemask_inference_batch_size_bucket",  # batch size
        "facemask_inference_queue_seconds_bucket",  # queue latency
        "facemask_inference_compute_seconds_bucket",  # compute latency
        "facemask_stream_lag",  # stream lag
        "facemask_alerts_total",  # alerts
        "facemask_compliance_ratio",  # compliance
    ):
        assert metric in exprs, metric


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    datasources = yaml.safe_load(
        (checks.GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in datasources["datasources"]}
    providers = yaml.safe_load(
        (checks.GRAFANA_DIR / "provisioning" / "dashboards" / "facemask.yml").read_text()
    )
    compose = checks.COMPOSE_FILE.read_text()
    for provider in providers["providers"]:
        assert f"./deploy/grafana/dashboards:{provider['options']['path']}" in compose
    for dashboard in checks.load_dashboards().values():
        used = set()
        for panel in dashboard["panels"]:
            for item in (panel, *panel.get("targets", [])):
                if "datasource" in item:
                    used.add(item["datasource"]["uid"])
        assert used and used <= uids


# --------------------------------------------------------------------------- images

DOCKERFILES = {s: REPO / "services" / s / "Dockerfile" for s in ("inference", "ingest", "alerts")}


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_conventions(service: str) -> None:
    text = DOCKERFILES[service].read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert "@sha256:" in text  # the digest-pinning note
    assert [s for s in stages if s[0] == "${PYTHON_IMAGE}"], "FROM the pinned base"
    assert stages[-1][1] == "runtime" and len(stages) >= 2
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(rf'pip install "\.\[{service}\]"', text)
    runtime = text[text.index("AS runtime") :]
    assert "USER 10001:10001" in runtime
    assert "PYTHONUNBUFFERED=1" in runtime
    assert "HEALTHCHECK" in runtime
    assert f'ENTRYPOINT ["python", "-m", "services.{service}"]' in runtime
    assert "models/cache" not in text and not re.search(r"COPY\s+\S*\.(pb|tflite)\b", text)


def test_inference_image_fetches_verified_weights() -> None:
    text = DOCKERFILES["inference"].read_text()
    assert "FACEMASK_MODEL_DIR=/opt/facemask/models" in text
    assert "facemask models fetch --group model" in text
    assert "ARG FACEMASK_MODEL_MIRROR" in text
    assert "chmod -R a+rX /opt/facemask/models" in text  # fetched files are 0600


def test_ingest_image_has_no_tensorflow() -> None:
    text = DOCKERFILES["ingest"].read_text()
    assert '".[ingest]"' in text
    assert "[inference]" not in text and "[all]" not in text
    assert "find_spec" in text  # the build fails if TensorFlow / gRPC slipped in
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = " ".join(extras["dependencies"] + extras["optional-dependencies"]["ingest"])
    assert "tensorflow" not in deps and "grpc" not in deps


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    allowed = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if glob.startswith("**/"):
            hit = any(fnmatch(c.rsplit("/", 1)[-1], glob[3:]) for c in candidates)
        else:
            hit = any(fnmatch(c, glob) for c in candidates)
        if hit:
            allowed = negate
    return allowed


def test_dockerignore_sends_sources_and_never_weights() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for dockerfile in DOCKERFILES.values():
        for line in dockerfile.read_text().splitlines():
            tokens = line.split()
            if tokens[:1] == ["COPY"] and not any(t.startswith("--from") for t in tokens):
                sources += [t for t in tokens[1:-1] if not t.startswith("--")]
    assert {"pyproject.toml", "README.md", "facemask", "services"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert _dockerignore_allows(source, patterns), source
    for allowed in ("facemask/cli.py", "services/alerts/static/index.html", "models/manifest.json"):
        assert _dockerignore_allows(allowed, patterns), allowed
    for denied in (
        "models/cache/face_mask_detection.pb",
        "facemask/data/x.tflite",
        ".venv/bin/python",
        ".git/HEAD",
        "bench/results/x.json",
        "facemask/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert not _dockerignore_allows(denied, patterns), denied


def test_images_install_every_data_file_they_need() -> None:
    """Images install the project non-editable: files that are not package data (the
    alert dashboard's static files...) would be missing from them."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data: dict[str, list[str]] = setuptools.get("package-data", {})
    missing = []
    for top in ("facemask", "services"):
        for path in sorted((REPO / top).rglob("*")):
            rel = path.relative_to(REPO).as_posix()
            if path.is_dir() or "__pycache__" in rel or path.suffix in (".py", ".pyc"):
                continue
            if path.name == "Dockerfile":
                continue
            covered = False
            for package, globs in package_data.items():
                base = package.replace(".", "/")
                if rel.startswith(base + "/"):
                    inner = rel[len(base) + 1 :]
                    covered |= any(fnmatch(inner, g) for g in globs)
            if not covered:
                missing.append(rel)
    assert missing == [], (
        "not package data, so missing from the images; add to [tool.setuptools.package-data]"
        f" in pyproject.toml: {missing}"
    )


def test_validate_script_runs_every_validation() -> None:
    script = (REPO / "scripts" / "validate_deploy.sh").read_text()
    for step in (
        "kubectl",
        "kubernetes-validate",
        "check-jsonschema --builtin-schema vendor.compose-spec",
        "promtool check config",
        "promtool check rules",
        "promtool test rules",
        "tests.deploy.checks",
        "tests.deploy.checks acl",
    ):
        assert step in script, step
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
