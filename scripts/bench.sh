#!/usr/bin/env bash
# Load the local stack and print/write the numbers (bench/results/). Arguments go to bench/run.py:
#   scripts/bench.sh [--duration 15] [--connections 64] [--rate 1000] [--rate-duration 20] [--help]
# Starts the stack if nothing answers on the port, and then stops what it started (only that) at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PORT="${TRIGGERS_HTTP_PORT:-8080}"
URL="http://127.0.0.1:$PORT"
PY="$ROOT/.venv/bin/python"

if [ ! -x "$PY" ]; then echo "bench: no .venv; run 'make install' (or 'make bench')" >&2; exit 1; fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

ready() { curl -fsS -m 5 "$URL/health/ready" >/dev/null 2>&1; }

# scripts/run.sh down stops Kafka and Postgres too; when those were already running (tests, another stack
# user), only the app process that this script started is stopped.
stop_app() {
  local pidfile="$ROOT/.stack/run/triggers.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pidfile"
  echo "bench: stopped the app it started" >&2
}

if ! ready; then
  if "$ROOT/scripts/postgres.sh" status >/dev/null 2>&1 && "$ROOT/scripts/kafka.sh" status >/dev/null 2>&1; then
    trap stop_app EXIT
  else
    trap '"$ROOT/scripts/run.sh" down >&2' EXIT
  fi
  echo "bench: starting the stack" >&2
  "$ROOT/scripts/run.sh" up >&2
fi

eval "$("$ROOT/scripts/stack.sh" env)"
"$PY" -m bench.run --url "$URL" "$@"
