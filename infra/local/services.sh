#!/usr/bin/env bash
# infra/local/services.sh {up|down|status} [kafka s3 pg] — start (in parallel) / stop / report the
# local real services used by tests and the demo. Default: all three. Idempotent.
# Env: see kafka.sh, s3.sh, pg.sh and lib.sh (INFRA_RUN, INFRA_CACHE, PYTHON, ports).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"; shift || true
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(kafka s3 pg)

run_all() {   # run_all ACTION: run "<svc>.sh ACTION" for every service in parallel, fail if any fails
  local action=$1 n pids=() rc=0
  for n in "${names[@]}"; do
    [ -x "$HERE/$n.sh" ] || { echo "unknown service: $n" >&2; exit 2; }
    "$HERE/$n.sh" "$action" & pids+=($!)
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "services.sh: ${names[$i]} $action FAILED" >&2; rc=1; }
  done
  return $rc
}

# Services started by a pytest session are marked in $INFRA_RUN/autostarted/<name> (see
# tests/infra/services.py) and stopped when the last session ends. A manual `up`/`down`
# (INFRA_OWNER unset) removes the mark: the developer owns those services from then on.
unmark() {
  [ -n "${INFRA_OWNER:-}" ] && return 0
  local run="${INFRA_RUN:-$HERE/../../var/infra}" n
  for n in "${names[@]}"; do rm -f "$run/autostarted/$n"; done
}

case "$cmd" in
  up) SECONDS=0; run_all start; unmark; echo "services up (${names[*]}) in ${SECONDS}s" >&2 ;;
  down) SECONDS=0; run_all stop; unmark; echo "services down (${names[*]}) in ${SECONDS}s" >&2 ;;
  status)
    rc=0
    for n in "${names[@]}"; do "$HERE/$n.sh" status || rc=3; done
    exit $rc ;;
  *) echo "usage: $0 {up|down|status} [kafka s3 pg]" >&2; exit 2 ;;
esac
