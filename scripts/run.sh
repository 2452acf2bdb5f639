#!/usr/bin/env bash
# The whole stack in dev mode: Kafka, Postgres and every service (--target all) on http://127.0.0.1:8080.
#   scripts/run.sh foreground   # Ctrl-C stops everything it started
#   scripts/run.sh up|down      # the same in the background
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="$ROOT/.stack/run"; PIDFILE="$RUN/triggers.pid"; LOG="$RUN/triggers.log"
PORT="${TRIGGERS_HTTP_PORT:-8080}"
WORKERS="${TRIGGERS_WORKERS:-$(nproc)}"  # one process per core, all on one port
mkdir -p "$RUN"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_busy() { python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$PORT))!=0)"; }

prepare() {
  if port_busy; then echo "port $PORT is already in use (is 'make up' running? 'make down' stops it)" >&2; exit 1; fi
  "$ROOT/scripts/stack.sh" start
  eval "$("$ROOT/scripts/stack.sh" env)"
  export TRIGGERS_DEV_MODE=true TRIGGERS_HTTP_PORT="$PORT"
}

wait_ready() {
  local deadline=$((SECONDS + 90))
  until curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; do
    if ! running; then echo "triggers exited during start-up:" >&2; tail -n 30 "$LOG" >&2; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then echo "triggers not ready after 90s" >&2; tail -n 30 "$LOG" >&2; return 1; fi
    sleep 0.2
  done
}

hint() {
  cat <<HINT
Triggers is serving http://127.0.0.1:$PORT (dev mode, key: test-api-key-12345)
  curl -s -X POST http://127.0.0.1:$PORT/v1/events -H 'X-API-Key: test-api-key-12345' \\
       -H 'Content-Type: application/json' -d '{"source":"shop","event_type":"order.created","payload":{"id":1}}'
  curl -s http://127.0.0.1:$PORT/v1/inbox -H 'X-API-Key: test-api-key-12345'
HINT
}

case "${1:-}" in
  foreground)
    prepare
    trap '"$ROOT/scripts/stack.sh" stop' EXIT
    ( sleep 1; wait_ready_fg() { until curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; do sleep 0.3; done; }; wait_ready_fg; hint ) &
    "$ROOT/.venv/bin/triggers" run --target all --port "$PORT" --workers "$WORKERS" || true
    ;;
  up)
    if running; then echo "triggers already running (pid $(cat "$PIDFILE"))"; hint; exit 0; fi
    prepare
    setsid nohup "$ROOT/.venv/bin/triggers" run --target all --port "$PORT" --workers "$WORKERS" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    wait_ready
    hint
    ;;
  down)
    if running; then
      pid="$(cat "$PIDFILE")"; kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "triggers: stopped"
    fi
    rm -f "$PIDFILE"
    "$ROOT/scripts/stack.sh" stop
    ;;
  *) echo "usage: $0 {foreground|up|down}" >&2; exit 2 ;;
esac
