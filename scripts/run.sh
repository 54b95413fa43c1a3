#!/usr/bin/env bash
# run.sh: install what is missing, build, and run ctxd in the foreground.
# Without CTXD_REDIS_URL it starts a private redis-server (data and AOF under
# .run/redis, reachable only through the unix socket .run/redis/redis.sock)
# and stops it when ctxd exits. Flags are passed to ctxd (see ctxd --help).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build
bin=$(scripts/build.sh | tail -n 1)

redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    redis-cli -s "$PWD/.run/redis/redis.sock" shutdown >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ -z "${CTXD_REDIS_URL:-}" ]; then
  dir="$PWD/.run/redis"
  mkdir -p "$dir"
  sock="$dir/redis.sock"
  if redis-cli -s "$sock" ping >/dev/null 2>&1; then
    echo "run.sh: a private redis from an earlier run is still up on $sock; using it" >&2
  else
    rm -f "$sock"
    redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 \
      --dir "$dir" --appendonly yes --appendfsync everysec --save "" \
      --logfile "$dir/redis.log" --daemonize no &
    redis_pid=$!
    for _ in $(seq 1 100); do
      redis-cli -s "$sock" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -s "$sock" ping >/dev/null 2>&1 || { echo "run.sh: redis-server did not start; see $dir/redis.log" >&2; exit 1; }
    echo "run.sh: private redis on $sock (data in $dir; inspect with: redis-cli -s $sock)" >&2
  fi
  export CTXD_REDIS_URL="unix://$sock"
fi

if [ -z "${ANTHROPIC_API_KEY:-}${ANTHROPIC_API_KEY_FILE:-}${OPENAI_API_KEY:-}${OPENAI_API_KEY_FILE:-}${CTXD_PROVIDER:-}" ]; then
  echo "run.sh: no API key set; using the offline echo model" >&2
fi
"$bin" "$@"
