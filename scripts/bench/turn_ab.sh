#!/usr/bin/env bash
# turn_ab.sh: two ctxd binaries' echo turn (20-message window, 1,000 contexts,
# 64 connections), run interleaved so that a shared machine's drift hits both:
# turns/s, Redis CPU per turn (used_cpu_user + used_cpu_sys) and Redis' own
# command time per turn (INFO commandstats; EXEC counts the commands inside it
# as well), per run and on average.
#   turn_ab.sh BIN_A BIN_B [PAIRS] [SECONDS]
# Needs redis-server, redis-cli, wrk, curl and python3 on PATH; each run has a
# fresh Redis and ctxd on free 127.0.0.1 ports.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: turn_ab.sh BIN_A BIN_B [PAIRS] [SECONDS]" >&2; exit 2; }
bin_a=$1 bin_b=$2 pairs=${3:-5} dur=${4:-4}
here=$(cd "$(dirname "$0")" && pwd)
py=${PY:-python3}

# shellcheck source=scripts/bench/lib.sh
. "$here/lib.sh"
bench_tmp turn-ab

turns() {
  BENCH_MODE=turn BENCH_THREADS=2 BENCH_IDS="$tmp/ids" \
    wrk -t2 -c64 -d"$1"s -s "$here/wrk.lua" "http://127.0.0.1:$2"
}

# One run of bin: prints "label rps redis_us_per_turn commands_us_per_turn".
run() {
  local label=$1 bin=$2 rp cp c0 c1 out
  rp=$(free_port) cp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" &
  pids+=($!)
  wait_redis "$rp" || { echo "turn_ab.sh: redis-server did not start" >&2; exit 1; }
  CTXD_LISTEN=127.0.0.1:$cp CTXD_REDIS_URL=redis://127.0.0.1:$rp/0 CTXD_PROVIDER=echo \
    "$bin" >"$tmp/ctxd.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$cp/healthz" || { echo "turn_ab.sh: ctxd did not start" >&2; exit 1; }
  $py "$here/prep.py" create "$cp" 1000 "$tmp/ids" '{"strategy":"window","max_messages":20}'
  $py "$here/prep.py" fill "$cp" "$tmp/ids" 20 >/dev/null
  turns 1 "$cp" >/dev/null # warm-up: every worker has its connection
  redis-cli -p "$rp" CONFIG RESETSTAT >/dev/null
  c0=$(redis_cpu "$rp")
  out=$(turns "$dur" "$cp")
  c1=$(redis_cpu "$rp")
  redis-cli -p "$rp" INFO commandstats >"$tmp/cstats"
  redis-cli -p "$rp" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
  $py - "$label" "$c0" "$c1" "$dur" "$tmp/cstats" "$out" <<'PY'
import json, re, sys
label, c0, c1, dur, cstats, out = sys.argv[1:7]
line = [l for l in out.splitlines() if l.startswith("BENCH ")]
if not line:
    sys.exit("turn_ab.sh: wrk printed no BENCH line:\n" + out)
rps = json.loads(line[0][6:])["rps"]
n = rps * float(dur)
usec = sum(int(m.group(1)) for m in re.finditer(r"usec=(\d+),", open(cstats).read()))
print("%s %.0f %.1f %.1f" % (label, rps, (float(c1) - float(c0)) * 1e6 / n, usec / n))
PY
}

echo "run turns/s redis_cpu_us/turn commands_us/turn"
for _ in $(seq "$pairs"); do
  run A "$bin_a"
  run B "$bin_b"
done | tee "$tmp/runs"
awk '{ r[$1] += $2; c[$1] += $3; k[$1] += $4; n[$1]++ }
     END { for (b in r) printf "mean %s %.0f %.1f %.1f (%d runs)\n", b, r[b] / n[b], c[b] / n[b], k[b] / n[b], n[b] }' \
  "$tmp/runs" | sort
