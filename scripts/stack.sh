#!/usr/bin/env bash
# Kafka and Postgres for the local stack: start both, stop both, or print the environment that points at them.
#   scripts/stack.sh start|stop|env
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-}" in
  start)
    "$ROOT/scripts/postgres.sh" start
    "$ROOT/scripts/kafka.sh" start
    ;;
  stop)
    "$ROOT/scripts/kafka.sh" stop
    "$ROOT/scripts/postgres.sh" stop
    ;;
  env)
    echo "export TRIGGERS_KAFKA_BOOTSTRAP=$("$ROOT/scripts/kafka.sh" bootstrap)"
    echo "export TRIGGERS_DATABASE_URL=$("$ROOT/scripts/postgres.sh" url)"
    ;;
  *) echo "usage: $0 {start|stop|env}" >&2; exit 2 ;;
esac
