#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1, run from the Maven Central jars.
#   scripts/kafka.sh fetch|start|stop|status
# State lives in $KAFKA_HOME (default .stack/kafka): jars, config, data, logs, pid. Ports are chosen once
# (free ports) and kept in $KAFKA_HOME/ports, so a restart keeps the same bootstrap address.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
KAFKA_HOME="${KAFKA_HOME:-$ROOT/.stack/kafka}"
LIBS="$ROOT/.stack/cache/kafka-libs-$KAFKA_VERSION"
CONF="$KAFKA_HOME/conf"; DATA="$KAFKA_HOME/data"; LOGS="$KAFKA_HOME/logs"; PIDFILE="$KAFKA_HOME/kafka.pid"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
JVM_OPTS="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true"

log() { echo "kafka: $*" >&2; }

need_java17() {
  command -v java >/dev/null || install_java
  local v; v=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)
  [ "${v:-0}" -ge 17 ] || install_java
}

install_java() {
  log "installing a Java 17 runtime and Maven from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
}

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || install_java
  log "resolving kafka_2.13:$KAFKA_VERSION from Maven Central"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -B -q -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" -Dkafka.libs.dir="$LIBS" \
    dependency:copy-dependencies
  [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && ls "$LIBS"/log4j-slf4j-impl-*.jar >/dev/null
  touch "$LIBS/.complete"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

choose_ports() {
  mkdir -p "$KAFKA_HOME"
  if [ ! -f "$KAFKA_HOME/ports" ]; then
    echo "${KAFKA_PORT:-$(free_port)} ${KAFKA_CONTROLLER_PORT:-$(free_port)}" >"$KAFKA_HOME/ports"
  fi
  read -r PORT CPORT <"$KAFKA_HOME/ports"
}

write_conf() {
  mkdir -p "$CONF" "$DATA" "$LOGS"
  cat >"$CONF/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=8
num.partitions=1
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=4
background.threads=2
num.recovery.threads.per.data.dir=1
group.coordinator.threads=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
group.min.session.timeout.ms=1000
PROPS
  cat >"$CONF/log4j2.properties" <<'PROPS'
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
PROPS
  sed -e 's/SYSTEM_OUT/SYSTEM_ERR/' -e '/logger.started/d' "$CONF/log4j2.properties" >"$CONF/tools-log4j2.properties"
}

tool() { java -Xmx128m -Dlog4j2.configurationFile="$CONF/tools-log4j2.properties" -cp "$LIBS/*" "$@"; }

format_once() {
  [ -f "$DATA/meta.properties" ] && return 0
  local cid; cid="$(tool kafka.tools.StorageTool random-uuid)"
  tool kafka.tools.StorageTool format -t "$cid" -c "$CONF/server.properties" >"$LOGS/format.log"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  need_java17
  choose_ports
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  fetch; write_conf; format_once
  : >"$LOGS/kafka.out"
  # shellcheck disable=SC2086
  setsid nohup java $HEAP $JVM_OPTS -Dlog4j2.configurationFile="$CONF/log4j2.properties" -Dkafka.logs.dir="$LOGS" \
    -cp "$LIBS/*" kafka.Kafka "$CONF/server.properties" >>"$LOGS/kafka.out" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  until grep -q 'Kafka Server started' "$LOGS/kafka.out"; do
    if ! running; then log "exited during start-up"; tail -n 40 "$LOGS/kafka.out" >&2; rm -f "$PIDFILE"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "start timed out"; tail -n 40 "$LOGS/kafka.out" >&2; return 1; fi
    sleep 0.2
  done
  log "ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "forcing kill"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  log "stopped"
}

status() {
  choose_ports
  if running; then echo "kafka running pid $(cat "$PIDFILE") on 127.0.0.1:$PORT"; else echo "kafka stopped"; return 1; fi
}

bootstrap() { choose_ports; echo "127.0.0.1:$PORT"; }

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  bootstrap) bootstrap ;;
  *) echo "usage: $0 {fetch|start|stop|status|bootstrap}" >&2; exit 2 ;;
esac
