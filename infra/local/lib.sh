# shellcheck shell=bash
# Common helpers for infra/local/*.sh (sourced, not executed).
# Env (all optional):
#   INFRA_RUN    data, logs, pid files of running services   (default: $REPO/var/infra)
#   INFRA_CACHE  downloads (Kafka jars)                      (default: ~/.cache/torghut-infra)
#   PYTHON       project venv interpreter                     (default: $REPO/.venv/bin/python)
#   INFRA_START_TIMEOUT  seconds to wait for readiness        (default: 120)
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$INFRA_DIR/../.." && pwd)"
INFRA_RUN="${INFRA_RUN:-$REPO/var/infra}"
INFRA_CACHE="${INFRA_CACHE:-$HOME/.cache/torghut-infra}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
INFRA_START_TIMEOUT="${INFRA_START_TIMEOUT:-120}"
mkdir -p "$INFRA_RUN"

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${SERVICE:-infra}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_ports_free PORT... -> fail loudly if a port is taken (by something that is not us)
require_ports_free() {
  local p
  for p in "$@"; do
    if port_open "$p"; then
      ss -ltnp 2>/dev/null | grep -E ":$p\b" >&2 || true
      die "port 127.0.0.1:$p is already in use by another process (override the port via env)"
    fi
  done
}

# wait_ports_closed DEADLINE_S PORT...
wait_ports_closed() {
  local deadline=$((SECONDS + $1)); shift
  local p
  for p in "$@"; do
    while port_open "$p"; do
      ((SECONDS < deadline)) || { log "port $p still open"; return 1; }
      sleep 0.2
    done
  done
}

# group_alive PGID -> 0 if any process of the process group is alive
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# pid_alive PIDFILE -> 0 if the pid (a process group leader we started) is alive
pidfile_alive() { [ -s "$1" ] && group_alive "$(cat "$1")"; }

# stop_group PIDFILE GRACE_S -> SIGTERM the process group, wait GRACE_S, then SIGKILL it
stop_group() {
  local pidfile=$1 grace=$2 pg
  [ -s "$pidfile" ] || return 0
  pg=$(cat "$pidfile")
  if group_alive "$pg"; then
    kill -TERM -- "-$pg" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while group_alive "$pg" && ((SECONDS < deadline)); do sleep 0.2; done
    if group_alive "$pg"; then
      log "process group $pg did not exit after ${grace}s; SIGKILL"
      kill -KILL -- "-$pg" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while group_alive "$pg" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
  fi
  group_alive "$pg" && die "process group $pg still alive after SIGKILL"
  rm -f "$pidfile"
}

# spawn PIDFILE LOGFILE CMD... -> run CMD in a new session (its own process group) in the background
spawn() {
  local pidfile=$1 logfile=$2; shift 2
  rm -f "$pidfile"
  # The inner shell is the session/group leader; it records its pid and execs the command.
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null &
  local deadline=$((SECONDS + 10))
  while [ ! -s "$pidfile" ]; do
    ((SECONDS < deadline)) || die "could not spawn $*"
    sleep 0.05
  done
}

# fail_with_log LOGFILE MSG -> print the log tail and exit 1
fail_with_log() {
  log "ERROR: $2"
  if [ -f "$1" ]; then
    echo "----- last 60 lines of $1 -----" >&2
    tail -n 60 "$1" >&2
    echo "-----" >&2
  fi
  exit 1
}
