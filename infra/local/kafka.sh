#!/usr/bin/env bash
# infra/local/kafka.sh {start|stop|status} — single-node Apache Kafka 4.x (KRaft, combined
# broker + controller) assembled from Maven Central jars. Idempotent.
# Env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), KAFKA_VERSION (4.4.0, fallback 4.3.1),
#      LOG4J_VERSION (2.25.3), KAFKA_HEAP (768m), plus INFRA_RUN / INFRA_CACHE / PYTHON (lib.sh).
# Extra listeners (unset = none; for TLS / SASL tests on a dedicated broker):
#      KAFKA_EXTRA_LISTENERS  e.g. "SSL://127.0.0.1:23001,SASL_SSL://127.0.0.1:23002", each named
#                             after its security protocol (advertised as given); the PLAINTEXT
#                             listener stays for inter-broker traffic and the readiness check
#      KAFKA_EXTRA_CONFIG     a properties file appended to server.properties (keystores, SASL)
set -euo pipefail
SERVICE=kafka
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_FALLBACK_VERSION="${KAFKA_FALLBACK_VERSION:-4.3.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.3}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
CTRL_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${KAFKA_HEAP:-768m}"
EXTRA_LISTENERS="${KAFKA_EXTRA_LISTENERS:-}"
EXTRA_CONFIG="${KAFKA_EXTRA_CONFIG:-}"
# the ports of the extra listeners (NAME://HOST:PORT,...)
EXTRA_PORTS=()
if [ -n "$EXTRA_LISTENERS" ]; then
  IFS=',' read -ra _listeners <<<"$EXTRA_LISTENERS"
  for _l in "${_listeners[@]}"; do EXTRA_PORTS+=("${_l##*:}"); done
fi
KDIR="$INFRA_RUN/kafka"
PIDFILE="$KDIR/kafka.pid"
LOGFILE="$KDIR/logs/kafka.out"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.11.0

khome() { echo "$INFRA_CACHE/kafka-$1"; }

# resolve VERSION LOGGING -> 0 if the runtime closure was copied into $(khome VERSION)/libs
resolve() {
  local ver=$1 logging=$2 home deps
  home=$(khome "$ver")
  mkdir -p "$home"
  case "$logging" in
    log4j2) deps="    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>" ;;
    reload4j) deps="    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>" ;;
    simple) deps="    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>" ;;
    none) deps="" ;;
  esac
  KV="$ver" DEPS="$deps" "$PYTHON" - "$INFRA_DIR/kafka-pom.xml.in" "$home/pom.xml" <<'PY'
import os, sys
text = open(sys.argv[1]).read()
text = text.replace("@KAFKA_VERSION@", os.environ["KV"]).replace("@LOGGING_DEPS@", os.environ["DEPS"])
open(sys.argv[2], "w").write(text)
PY
  rm -rf "$home/libs.tmp"
  log "resolving kafka_2.13:$ver with logging=$logging from Maven Central (cached in ~/.m2)"
  if ! mvn -B -q -f "$home/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$home/libs.tmp" >"$home/mvn.log" 2>&1; then
    log "mvn failed for $ver/$logging (see $home/mvn.log):"; tail -n 15 "$home/mvn.log" >&2
    return 1
  fi
  "$PYTHON" - "$home/libs.tmp" <<'PY'
import glob, sys, zipfile
jar = glob.glob(sys.argv[1] + "/kafka_2.13-*.jar")[0]
names = set(zipfile.ZipFile(jar).namelist())
for c in ("kafka/Kafka.class", "kafka/tools/StorageTool.class"):
    assert c in names, f"{c} missing in {jar}"
PY
  rm -rf "$home/libs"; mv "$home/libs.tmp" "$home/libs"
  echo "$logging" > "$home/logging"
  touch "$home/.complete"
}

install() {
  local ver logging
  for ver in "$KAFKA_VERSION" "$KAFKA_FALLBACK_VERSION"; do
    [ -f "$(khome "$ver")/.complete" ] && { KHOME=$(khome "$ver"); return 0; }
  done
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  # serialise concurrent installs (several INFRA_RUNs share one cache)
  mkdir -p "$INFRA_CACHE"
  exec 9>"$INFRA_CACHE/.kafka-install.lock"
  flock 9
  for ver in "$KAFKA_VERSION" "$KAFKA_FALLBACK_VERSION"; do
    [ -f "$(khome "$ver")/.complete" ] && { KHOME=$(khome "$ver"); exec 9>&-; return 0; }
  done
  for ver in "$KAFKA_VERSION" "$KAFKA_FALLBACK_VERSION"; do
    for logging in log4j2 reload4j simple none; do
      if resolve "$ver" "$logging"; then KHOME=$(khome "$ver"); exec 9>&-; return 0; fi
    done
  done
  die "could not resolve Kafka $KAFKA_VERSION or $KAFKA_FALLBACK_VERSION from Maven Central"
}

jvm_opts() {
  JOPTS=(-Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
         -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
         -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
         "-Dkafka.logs.dir=$KDIR/logs")
  case "$(cat "$KHOME/logging")" in
    log4j2) JOPTS+=("-Dlog4j2.configurationFile=$INFRA_DIR/kafka-log4j2.properties") ;;
    reload4j) JOPTS+=("-Dlog4j.configuration=file:$INFRA_DIR/kafka-log4j.properties") ;;
  esac
}

write_config() {
  mkdir -p "$KDIR/data" "$KDIR/logs"
  sed -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" -e "s#@CTRL_PORT@#$CTRL_PORT#g" -e "s#@KDIR@#$KDIR#g" \
      "$INFRA_DIR/kafka-server.properties.in" > "$KDIR/server.properties"
  [ -n "$EXTRA_LISTENERS" ] || return 0
  local l names=""
  for l in "${_listeners[@]}"; do names+=",${l%%://*}:${l%%://*}"; done
  sed -i -e "s#^listeners=\(.*\)#listeners=\1,$EXTRA_LISTENERS#" \
         -e "s#^advertised.listeners=\(.*\)#advertised.listeners=\1,$EXTRA_LISTENERS#" \
         -e "s#^listener.security.protocol.map=\(.*\)#listener.security.protocol.map=\1$names#" \
         "$KDIR/server.properties"
  if [ -n "$EXTRA_CONFIG" ]; then
    { echo "# --- KAFKA_EXTRA_CONFIG ($EXTRA_CONFIG) ---"; cat "$EXTRA_CONFIG"; } >> "$KDIR/server.properties"
  fi
}

format() {
  [ -f "$KDIR/data/meta.properties" ] && return 0
  # A KRaft cluster id is 22 characters of URL-safe base64; one starting with "-" (1 in 64) is
  # taken by kafka-storage's argument parser for an option ("--cluster-id: expected one
  # argument"), so draw until it does not (as Kafka's own Uuid.randomUuid does).
  [ -s "$KDIR/cluster.id" ] || "$PYTHON" -c 'import base64, itertools, uuid
ids = (base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") for _ in itertools.count())
print(next(i for i in ids if not i.startswith("-")))' > "$KDIR/cluster.id"
  log "formatting KRaft storage in $KDIR/data"
  "$JAVA" "${JOPTS[@]}" -Xmx512m -cp "$KHOME/libs/*" kafka.tools.StorageTool format \
      --ignore-formatted -t "$(cat "$KDIR/cluster.id")" -c "$KDIR/server.properties" \
      >>"$KDIR/logs/format.log" 2>&1 || fail_with_log "$KDIR/logs/format.log" "storage format failed"
}

running() { pidfile_alive "$PIDFILE"; }

ready() {
  "$PYTHON" - "$KAFKA_PORT" "$PIDFILE" "$INFRA_START_TIMEOUT" <<'PY'
import os, sys, time
from confluent_kafka.admin import AdminClient
port, pidfile, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
end = time.monotonic() + timeout
while time.monotonic() < end:
    try:
        os.kill(-int(open(pidfile).read()), 0)
    except (OSError, ValueError):
        sys.exit("kafka process died")
    try:
        if admin.list_topics(timeout=2).brokers:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(f"kafka not ready after {timeout:.0f} s")
PY
}

start() {
  command -v "$JAVA" >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
  if running; then ready || fail_with_log "$LOGFILE" "kafka running but not ready"; return 0; fi
  require_ports_free "$KAFKA_PORT" "$CTRL_PORT" "${EXTRA_PORTS[@]}"
  install; jvm_opts; write_config; format
  log "starting Kafka ($(basename "$KHOME")) on 127.0.0.1:$KAFKA_PORT (controller $CTRL_PORT)"
  spawn "$PIDFILE" "$LOGFILE" "$JAVA" "${JOPTS[@]}" -cp "$KHOME/libs/*" kafka.Kafka "$KDIR/server.properties"
  ready || { stop_group "$PIDFILE" 10; fail_with_log "$LOGFILE" "kafka did not become ready"; }
  log "ready"
}

stop() {
  running || { rm -f "$PIDFILE"; return 0; }
  stop_group "$PIDFILE" 30
  wait_ports_closed 10 "$KAFKA_PORT" "$CTRL_PORT" "${EXTRA_PORTS[@]}" || die "kafka ports still open after stop"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka up 127.0.0.1:$KAFKA_PORT"; else echo "kafka down"; exit 3; fi ;;
  logs) echo "$LOGFILE" ;;
  *) echo "usage: $0 {start|stop|status|logs}" >&2; exit 2 ;;
esac
