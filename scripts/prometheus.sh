#!/usr/bin/env bash
# The Prometheus server and promtool, from Debian's package, for the rules check and the dashboards test.
#   scripts/prometheus.sh install   installs the package when `prometheus` or `promtool` is missing
#   scripts/prometheus.sh check     promtool checks the alert rules and the example configuration in deploy/prometheus/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
log() { echo "prometheus: $*" >&2; }

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  log "installing Prometheus from Debian's packages"
  # The package's post-install starts a prometheus service on :9090. The tests start their own server on a
  # free port, so no service is started: without a policy-rc.d, one that refuses is in place for the install.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  local status=0
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
      prometheus >/dev/null; } || status=$?
  [ -n "$own_policy" ] && rm -f "$policy"
  return "$status"
}

case "${1:-}" in
  install) install ;;
  check)
    install
    promtool check rules "$ROOT"/deploy/prometheus/*.rules.yml
    promtool check config --syntax-only "$ROOT/deploy/prometheus/prometheus.yml"
    ;;
  *) echo "usage: $0 {install|check}" >&2; exit 2 ;;
esac
