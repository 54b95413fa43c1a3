# shellcheck shell=bash
# lib.sh: what scripts/bench.sh, scaleout.sh and turn_ab.sh share; sourced,
# never run. The caller sets py (a python3) first.
#   bench_tmp NAME        a fresh $tmp, and an EXIT trap that kills every pid in
#                         $pids and removes $tmp (after bench_on_fail, if the
#                         caller defines it, on a non-zero exit)
#   free_port             a free 127.0.0.1 port whose +10000 (a cluster node's
#                         bus port) is free too
#   wait_http URL         up to 15 s for URL to answer 2xx
#   wait_redis PORT       up to 10 s for the Redis on PORT to answer PONG
#   redis_cpu PORT...     CPU seconds (user + system) the Redis servers on PORTs
#                         have used, summed

bench_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctxd-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && declare -F bench_on_fail >/dev/null; then bench_on_fail; fi
  rm -rf "$tmp"
}

free_port() {
  "${py:-python3}" - <<'PY'
import random, socket
for _ in range(1000):
    p = random.randrange(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
    except OSError:
        continue
    print(p); break
PY
}

wait_http() {
  local _
  for _ in $(seq 150); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  return 1
}

wait_redis() {
  local _
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  return 1
}

redis_cpu() {
  local p
  for p in "$@"; do redis-cli -p "$p" INFO cpu; done |
    awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.6f", t }'
}
