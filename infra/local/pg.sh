#!/usr/bin/env bash
# infra/local/pg.sh {start|stop|status} — PostgreSQL 15 from Debian apt, run as a dedicated
# cluster (Debian cluster tools) on 127.0.0.1:$PG_TEST_PORT with trust auth. Idempotent.
# Env: PG_TEST_PORT (55432), PG_TEST_VERSION (15), PG_TEST_CLUSTER (torghut_<port>).
# The server log is linked as $INFRA_RUN/pg/postgresql.log.
# NB: never export PGCLUSTER (Debian's pg_wrapper reads it as "ver/cluster").
set -euo pipefail
unset PGCLUSTER PGPORT PGHOST
SERVICE=pg
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGV="${PG_TEST_VERSION:-15}"
PORT="${PG_TEST_PORT:-55432}"
CL="${PG_TEST_CLUSTER:-torghut_$PORT}"
PDIR="$INFRA_RUN/pg"
LOGFILE="/var/log/postgresql/postgresql-$PGV-$CL.log"

install() {
  dpkg -s "postgresql-$PGV" >/dev/null 2>&1 && return 0
  log "installing postgresql-$PGV from apt"
  if ! dpkg -s postgresql-common >/dev/null 2>&1; then
    # do not create/start Debian's default 'main' cluster on 5432
    mkdir -p /etc/postgresql-common
    [ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PGV" >&2
}

exists() { pg_lsclusters -h | awk -v c="$CL" -v v="$PGV" '$1==v && $2==c {f=1} END {exit !f}'; }
running() { exists && pg_ctlcluster "$PGV" "$CL" status >/dev/null 2>&1; }

create() {
  exists && return 0
  log "creating cluster $PGV/$CL on port $PORT (trust auth)"
  pg_createcluster "$PGV" "$CL" --port "$PORT" --start-conf manual --locale=C.UTF-8 -e UTF8 \
    -- --auth=trust >/dev/null
  printf "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n" \
    > "/etc/postgresql/$PGV/$CL/conf.d/zz-torghut-test.conf"
}

ready() {
  local deadline=$((SECONDS + INFRA_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    pg_isready -h 127.0.0.1 -p "$PORT" -q && return 0
    sleep 0.1
  done
  return 1
}

start() {
  install
  mkdir -p "$PDIR"
  if running; then ready || fail_with_log "$LOGFILE" "postgres running but not ready"; return 0; fi
  require_ports_free "$PORT"
  create
  ln -sfn "$LOGFILE" "$PDIR/postgresql.log"
  log "starting PostgreSQL $PGV cluster $CL on 127.0.0.1:$PORT"
  pg_ctlcluster --skip-systemctl-redirect "$PGV" "$CL" start || fail_with_log "$LOGFILE" "pg_ctlcluster start failed"
  ready || fail_with_log "$LOGFILE" "postgres did not become ready"
  log "ready"
}

stop() {
  running || return 0
  pg_ctlcluster --skip-systemctl-redirect "$PGV" "$CL" stop -m fast || {
    log "fast stop failed; immediate stop"; pg_ctlcluster --skip-systemctl-redirect "$PGV" "$CL" stop -m immediate; }
  wait_ports_closed 10 "$PORT" || die "postgres port $PORT still open after stop"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "pg up 127.0.0.1:$PORT ($PGV/$CL)"; else echo "pg down"; exit 3; fi ;;
  logs) echo "$LOGFILE" ;;
  drop) stop; exists && pg_dropcluster "$PGV" "$CL"; true ;;
  *) echo "usage: $0 {start|stop|status|logs|drop}" >&2; exit 2 ;;
esac
