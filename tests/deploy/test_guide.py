"""The deploy guide (deploy/README.md) works as written, as far as it can be checked
offline: its YAML snippets are applied to a copy of the dev overlay exactly as it tells
the reader to, rendered with ``kubectl kustomize`` and put through every check of
``tests.deploy.checks``; its image names, ports, token and files are the real ones.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks

GUIDE = checks.DEPLOY_DIR / "README.md"
DEV = checks.K8S_DIR / "overlays" / "dev"
KIND_CONFIG = checks.DEPLOY_DIR / "kind" / "cluster.yaml"

needs_kubectl = pytest.mark.skipif(checks.kubectl() is None, reason="kubectl not installed")


def section(title: str) -> str:
    """The text of the guide's ``## title`` section."""
    text = GUIDE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def code_blocks(text: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of a text, indentation of list items removed."""
    blocks = re.findall(rf"^( *)```{lang}\n(.*?)^\1```", text, flags=re.M | re.S)
    return [re.sub(rf"^{indent}", "", body, flags=re.M) for indent, body in blocks]


def yaml_blocks(title: str) -> list[Any]:
    return [yaml.safe_load(b) for b in code_blocks(section(title), "yaml")]


LOCAL = "Kubernetes on your machine (kind or minikube)"
PORTS = "Sink and camera ports"


def _problems(docs: tuple[dict[str, Any], ...]) -> list[str]:
    combination = checks.Combination("dev", ())
    return [
        *checks.schema_problems(docs),
        *checks.crd_problems(docs),
        *checks.semantic_problems(combination, list(docs)),  # egress ports included
    ]


def _dev_copy(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    overlay = checks.copy_kustomization(DEV, tmp_path)
    return overlay, yaml.safe_load((overlay / "kustomization.yaml").read_text())


def _write(overlay: Path, kustomization: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return checks.kustomize_build(overlay)


def test_kind_cluster_maps_the_ingress_ports() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = config["nodes"]
    mappings = {
        (m["containerPort"], m["hostPort"], m["listenAddress"]) for m in node["extraPortMappings"]
    }
    assert mappings == {(80, 80, "127.0.0.1"), (443, 443, "127.0.0.1")}
    patch = yaml.safe_load(node["kubeadmConfigPatches"][0])
    assert patch["nodeRegistration"]["kubeletExtraArgs"]["node-labels"] == "ingress-ready=true"
    assert f"--config {KIND_CONFIG.relative_to(checks.REPO_ROOT)}" in section(LOCAL)


def test_guide_loads_the_images_the_manifests_run() -> None:
    """`kind load` / `minikube image load` name exactly the images compose builds and the
    dev overlay runs."""
    text = section(LOCAL)
    (kind_line,) = re.findall(r"kind load docker-image (.+) --name", text)
    loaded = set(kind_line.split())
    minikube = re.search(r"for s in ([\w ]+); do minikube image load (\S+); done", text)
    assert minikube is not None
    assert {minikube.group(2).replace("$s", s) for s in minikube.group(1).split()} == loaded
    compose = checks.compose_config()["services"]
    built = {s["image"] for s in compose.values() if "build" in s}
    assert built == loaded
    docs = checks.render(checks.Combination("dev", ()))
    facemask_images = {
        c["image"]
        for d in docs
        if d.get("kind") in checks.WORKLOAD_KINDS
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith("facemask/")
    }
    assert facemask_images == loaded
    pull = {
        c["imagePullPolicy"]
        for d in docs
        if d.get("kind") in checks.WORKLOAD_KINDS
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert pull == {"IfNotPresent"}  # the loaded images are used, not pulled


@needs_kubectl
def test_guide_reaches_the_dashboard_and_the_model() -> None:
    """The port-forwards name real Services and ports; the token is the dev overlay's."""
    text = section(LOCAL)
    docs = checks.render(checks.Combination("dev", ()))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    forwards = re.findall(r"port-forward svc/(\w+) (\d+):(\d+)", text)
    assert {f[0] for f in forwards} == {"alerts", "inference"}
    for name, _, remote in forwards:
        assert int(remote) in {p["port"] for p in services[name]["spec"]["ports"]}
    secret = next(d for d in docs if d["metadata"]["name"].startswith("facemask-alerts-auth"))
    token = base64.b64decode(secret["data"]["api-token"]).decode()
    assert f"?token={token}" in text and f"Bearer {token}" in text


@needs_kubectl
def test_guide_ingress_on_the_dev_overlay(tmp_path: Path) -> None:
    """The guide's `components:` list in the dev overlay: an Ingress to the alerts Service
    in facemask-dev, valid and admitted by the NetworkPolicies."""
    (components,) = [b for b in yaml_blocks(LOCAL) if isinstance(b, dict) and "components" in b]
    overlay, kustomization = _dev_copy(tmp_path)
    assert set(kustomization["components"]) < set(
        checks._rebase(c, DEV, overlay) for c in components["components"]
    )
    kustomization["components"] = [
        checks._rebase(c, DEV, overlay) for c in components["components"]
    ]
    docs = _write(overlay, kustomization)
    ingress = [d for d in docs if d["kind"] == "Ingress"]
    assert len(ingress) == 1 and ingress[0]["metadata"]["namespace"] == "facemask-dev"
    assert ingress[0]["spec"]["rules"][0]["host"] == "facemask.localhost"
    assert "http://facemask.localhost/" in section(LOCAL)
    assert _problems(docs) == []


@needs_kubectl
def test_guide_adds_a_camera(tmp_path: Path) -> None:
    """Step 6 on a copy of the dev overlay: the sed'ed Deployment, listed as a resource,
    and the guide's facemask-cameras generator: one more valid ingest Deployment reading
    its camera from the Secret. On a port the ingest NetworkPolicy does not allow, the
    check reports it, and the guide's port patch fixes that."""
    text = section(LOCAL)
    sed = re.search(r"sed 's/(\w+)/(\w+)/g' (\S+) > (\S+)", text)
    assert sed is not None
    old, new, source, target = sed.groups()
    overlay, kustomization = _dev_copy(tmp_path)
    (overlay / Path(target).name).write_text(
        (checks.REPO_ROOT / source).read_text().replace(old, new)
    )
    assert Path(target).parent == DEV.relative_to(checks.REPO_ROOT)
    kustomization["resources"].append(Path(target).name)
    (generator,) = [b[0] for b in yaml_blocks(LOCAL) if isinstance(b, list)]
    assert generator["name"] == "facemask-cameras"
    kustomization["secretGenerator"] = [
        generator if g["name"] == "facemask-cameras" else g
        for g in kustomization["secretGenerator"]
    ]
    docs = _write(overlay, kustomization)
    door = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"ingest-{new}"
    ]
    assert len(door) == 1 and door[0]["spec"]["replicas"] == 1
    assert _problems(docs) == []

    # the same camera on a port the ingest NetworkPolicy does not list ...
    (patches,) = [b for b in yaml_blocks(PORTS) if isinstance(b, dict) and "patches" in b]
    port = patches["patches"][0]["patch"].split("port: ")[-1].strip(" }\n")
    generator["literals"][-1] = generator["literals"][-1].replace(":554/", f":{port}/")
    docs = _write(overlay, kustomization)
    blocked = _problems(docs)
    assert len(blocked) == 1 and f"(TCP {port})" in blocked[0], blocked
    # ... is allowed by the guide's patch
    kustomization["patches"] = [*kustomization.get("patches", []), *patches["patches"]]
    assert _problems(_write(overlay, kustomization)) == []


def test_guide_sink_ports_snippet_is_the_prod_patch() -> None:
    (policy,) = [b for b in yaml_blocks(PORTS) if isinstance(b, dict) and b.get("kind")]
    prod = yaml.safe_load(
        (checks.K8S_DIR / "overlays" / "prod" / "alerts-sink-ports.yaml").read_text()
    )
    assert policy == prod
    prod_kustomization = yaml.safe_load(
        (checks.K8S_DIR / "overlays" / "prod" / "kustomization.yaml").read_text()
    )
    assert {"path": "alerts-sink-ports.yaml"} in prod_kustomization["patches"]
    assert (checks.K8S_DIR / "overlays" / "prod" / checks.SINK_EXAMPLE_ENV).is_file()


def test_guide_names_only_existing_files() -> None:
    """Every repository path the guide names in backquotes exists."""
    text = GUIDE.read_text()
    missing = []
    for path in set(
        re.findall(r"`((?:deploy|services|scripts|requirements|facemask)/[\w./-]+)`", text)
    ):
        if "<" in path or "*" in path:
            continue
        candidates = [checks.REPO_ROOT / path, checks.K8S_DIR / path]
        if not any(c.exists() for c in candidates):
            missing.append(path)
    for path in re.findall(r"`((?:base|overlays|components)/[\w./-]+)`", text):
        if not (checks.K8S_DIR / path).exists():
            missing.append(path)
    assert missing == []
