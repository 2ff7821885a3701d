#!/usr/bin/env bash
# Validate every deployment file offline; exit non-zero on any failure.
#   scripts/validate_deploy.sh            (or: make validate-deploy)
# Needs: kubectl (kustomize), promtool, and the dev virtualenv (kubernetes-validate,
# check-jsonschema); none of them reaches the network.
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

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "kubectl kustomize + kubernetes-validate --strict of the overlays (standard kinds; KEDA CRDs are checked structurally below)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
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

step "docker-compose.yml semantics (healthchecks behind depends_on, \${VAR:?} secrets, settings names, scrape targets, no container as root, redis-server with its ACL file)"
run "$PY" -m tests.deploy.checks compose

step "Redis ACL files (deploy/redis/users.acl, the dev overlay's) are what facemask.infra.redisacl generates"
run "$PY" -m tests.deploy.checks acl

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
