#!/usr/bin/env bash
# Offline checks of the deployment files (make check runs this): compose.yaml against the Compose spec,
# every object of each Kustomize overlay against the Kubernetes schemas and its CRD's schema, the routing
# table against the app's OpenAPI document, and no dev key in prod (tests/deploy). No cluster, no Docker.
# The tools are pinned and cached under .stack/tools/deploy:
#   kustomize     sigs.k8s.io/kustomize/kustomize/v5 (go install, from the Go module proxy)
#   composecheck  deploy/check/composecheck: compose-go, the loader of `docker compose` (go build, go.sum)
#   CRD schemas   @kubernetes-models/{gateway-api,keda,prometheus-operator} (npm ci, deploy/check/package-lock.json)
#   Kubernetes    kubernetes-validate (PyPI, the dev group of pyproject.toml, locked in uv.lock)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KUSTOMIZE_VERSION=v5.7.1
TOOLS="$ROOT/.stack/tools/deploy"
mkdir -p "$TOOLS/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

need() {  # command, Debian package
  command -v "$1" >/dev/null 2>&1 && return
  echo "check-deploy: installing $2 from Debian's packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq "$2" >/dev/null; fi
}
need go golang-go
need node nodejs
need npm npm

if [ "$(cat "$TOOLS/kustomize.version" 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
  echo "check-deploy: installing kustomize $KUSTOMIZE_VERSION" >&2
  GOBIN="$TOOLS/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  echo "$KUSTOMIZE_VERSION" > "$TOOLS/kustomize.version"
fi

# go build is cached: after the first build this takes well under a second.
(cd "$ROOT/deploy/check/composecheck" && go build -o "$TOOLS/bin/composecheck" .)

if ! cmp -s "$ROOT/deploy/check/package-lock.json" "$TOOLS/npm/package-lock.json"; then
  echo "check-deploy: installing the CRD schemas (npm ci)" >&2
  rm -rf "$TOOLS/npm" && mkdir -p "$TOOLS/npm"
  cp "$ROOT/deploy/check/package.json" "$ROOT/deploy/check/package-lock.json" "$TOOLS/npm/"
  (cd "$TOOLS/npm" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false)
fi

export TRIGGERS_KUSTOMIZE="$TOOLS/bin/kustomize" TRIGGERS_COMPOSECHECK="$TOOLS/bin/composecheck" \
  TRIGGERS_CRD_MODULES="$TOOLS/npm/node_modules"
"$TRIGGERS_COMPOSECHECK" "$ROOT/compose.yaml"
for overlay in dev prod; do
  "$TRIGGERS_KUSTOMIZE" build "$ROOT/deploy/k8s/overlays/$overlay" >/dev/null
done
for dir in deploy/prometheus deploy/grafana/provisioning deploy/grafana/dashboards; do
  [ -d "$ROOT/$dir" ] || echo "check-deploy: $dir does not exist yet; compose.yaml mounts it" >&2
done
cd "$ROOT"
exec .venv/bin/pytest -q -p no:cacheprovider tests/deploy
