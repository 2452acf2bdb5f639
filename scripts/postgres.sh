#!/usr/bin/env bash
# The machine's PostgreSQL, run from a project-local data directory on 127.0.0.1 and a free port.
#   scripts/postgres.sh start|stop|status|url
# initdb refuses to run as root, so the server runs as the 'postgres' system user.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_HOME="${PG_HOME:-$ROOT/.stack/postgres}"
DB_NAME=triggers
DB_USER=triggers

log() { echo "postgres: $*" >&2; }

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && PGBIN="$d"; done
  [ -n "${PGBIN:-}" ]
}

install_postgres() {
  log "installing PostgreSQL from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The server's files must be reachable by the postgres user. When the checkout sits below a folder that
# user cannot enter (e.g. /root), the data lives in /var/tmp and .stack/postgres links to it.
data_dir() {
  mkdir -p "$PG_HOME"
  if [ -e "$PG_HOME/data" ] || [ -L "$PG_HOME/data" ]; then DATA="$PG_HOME/data"; return; fi
  if [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$PG_HOME"; then
    mkdir -p "$PG_HOME/data"
  else
    local outside; outside="/var/tmp/triggers-pg-$(echo "$PG_HOME" | sha1sum | cut -c1-12)"
    mkdir -p "$outside"; ln -sfn "$outside" "$PG_HOME/data"
  fi
  DATA="$PG_HOME/data"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$(readlink -f "$DATA")"; fi
  chmod 700 "$(readlink -f "$DATA")"
}

port() {
  mkdir -p "$PG_HOME"
  [ -f "$PG_HOME/port" ] || echo "${PG_PORT:-$(free_port)}" >"$PG_HOME/port"
  PORT="$(cat "$PG_HOME/port")"
}

running() { data_dir; find_bin && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  find_bin || install_postgres
  find_bin || { log "no PostgreSQL server found"; exit 1; }
  id postgres >/dev/null 2>&1 || { log "no 'postgres' system user"; exit 1; }
  port; data_dir
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$PG_HOME/initdb.log"
  fi
  if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "already running on 127.0.0.1:$PORT"
  else
    local sock; sock="$(readlink -f "$DATA")"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -w -t 60 -l "$sock/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $sock -c max_connections=200 -c shared_buffers=256MB -c fsync=on" \
      start >/dev/null
    log "ready on 127.0.0.1:$PORT"
  fi
  local psql=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='$DB_USER'")" != 1 ]; then
    "${psql[@]}" -c "create role $DB_USER login superuser"
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='$DB_NAME'")" != 1 ]; then
    "${psql[@]}" -c "create database $DB_NAME owner $DB_USER"
  fi
}

stop() {
  find_bin || return 0
  data_dir
  if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    log "stopped"
  fi
}

status() {
  port
  if running; then echo "postgres running on 127.0.0.1:$PORT"; else echo "postgres stopped"; return 1; fi
}

url() { port; echo "postgresql://$DB_USER@127.0.0.1:$PORT/$DB_NAME"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *) echo "usage: $0 {start|stop|status|url}" >&2; exit 2 ;;
esac
