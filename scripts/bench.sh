#!/usr/bin/env bash
# bench.sh: where ctxd stands against its limits, as ratios measured in one run.
#   scripts/bench.sh [--quick] [--scaleout]
# Builds a Release ctxd (build-bench/), starts its own redis-server, fake
# upstream, ctxd processes and haproxy on free 127.0.0.1 ports in a temp dir,
# measures the floors (ctxd /healthz, redis-benchmark, the fake upstream
# called directly) and the scenarios, and writes bench/results.md,
# bench/results.json and bench/scaling.png. Everything it starts is stopped
# on exit. --quick: short runs, about two minutes; the full run takes ~12.
# --scaleout: instead, the context GET and the echo turn against 1, 2, 4 ctxd
# processes behind haproxy, on one Redis and on a 3-master Redis Cluster, with
# the Redis CPU per request (bench/scaleout.md; SCALEOUT_PROCS="1 2 4 8" for
# another curve).
# CTXD_BIN=/path/to/ctxd skips the build and measures that binary.
# Helpers (wrk Lua, Python clients, report) live in scripts/bench/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
here=$root/scripts/bench
py=/usr/bin/python3

quick=0 scaleout=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --scaleout) scaleout=1 ;;
    *) echo "usage: $0 [--quick] [--scaleout]" >&2; exit 2 ;;
  esac
done

if [ $quick = 1 ]; then
  warm=1 dur=3 rb_n=20000 s5_ns="100 500 2000" s4_turns="100 50 10" s4_turns_win=200
else
  warm=5 dur=20 rb_n=200000 s5_ns="100 500 2000" s4_turns="1000 300 20" s4_turns_win=1000
fi
# Scenario 4 loads up to 100,000 messages in one context; scenario 7 10,000.
s4_sizes="10 1000 100000"
s7_count=10000
s7_size=200

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# ---- Packages (apt-get only for what is missing) ----
install_missing() {
  local want="wrk redis-server redis-tools haproxy gnuplot-nox curl python3" missing=() p
  for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  # Any gnuplot flavour will do.
  if [[ " ${missing[*]} " == *" gnuplot-nox "* ]] && command -v gnuplot >/dev/null; then
    missing=("${missing[@]/gnuplot-nox/}")
  fi
  [ -z "${missing[*]// /}" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    sudo=sudo
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2068
  $sudo apt-get install -y -qq --no-install-recommends ${missing[@]} >/dev/null
}
install_missing
scripts/deps.sh build

if [ -n "${CTXD_BIN:-}" ]; then
  bin=$CTXD_BIN # a binary built elsewhere (e.g. from a clean checkout)
else
  say "building Release ctxd in build-bench/"
  bin=$root/$(scripts/build.sh --release --dir build-bench | tail -1)
fi
[ -x "$bin" ] || die "no binary at $bin"

if [ $scaleout = 1 ]; then
  # The curve over 1, 2, 4 ctxd processes, one Redis and a 3-master cluster:
  # bench/scaleout.md and bench/scaleout.json (scripts/bench/scaleout.sh).
  exec "$here/scaleout.sh" "$bin" "$root/bench" $quick
fi

# ---- Processes, ports, cleanup ----
# shellcheck source=scripts/bench/lib.sh
. "$here/lib.sh"
bench_tmp bench
bench_on_fail() { # keep the logs of a failed run
  rm -rf "$root/bench/failed-run" && mkdir -p "$root/bench/failed-run"
  cp "$tmp"/*.log "$tmp"/*.out "$tmp"/*.err "$tmp/redis/redis.log" "$root/bench/failed-run/" 2>/dev/null || true
  say "logs of the failed run in bench/failed-run/"
}
results=$tmp/results.jsonl
: >"$results"

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

rport=$(free_port)
mkdir -p "$tmp/redis"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp/redis" --save "" \
  --appendonly no --maxclients 10000 --daemonize no \
  --logfile "$tmp/redis/redis.log" &
pids+=($!)
rcli() { redis-cli -p "$rport" "$@"; }
wait_redis "$rport" || die "redis-server did not start"

$py "$root/tests/fakes/fake_upstream.py" --port 0 >"$tmp/fake.out" 2>"$tmp/fake.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^PORT ' "$tmp/fake.out" 2>/dev/null && break; sleep 0.1; done
fport=$(awk '/^PORT /{print $2}' "$tmp/fake.out")
[ -n "$fport" ] || die "fake upstream did not start"

# start_ctxd NAME [VAR=VALUE...]: a ctxd on a free port; sets ctxd_port/ctxd_pid.
start_ctxd() {
  local name=$1
  shift
  ctxd_port=$(free_port)
  env -u ANTHROPIC_API_KEY -u OPENAI_API_KEY -u CTXD_PROVIDER \
    CTXD_LISTEN="127.0.0.1:$ctxd_port" CTXD_REDIS_URL="redis://127.0.0.1:$rport/0" \
    CTXD_PROVIDER=echo CTXD_MAX_MESSAGES=200000 "$@" \
    "$bin" >"$tmp/ctxd-$name.log" 2>&1 &
  ctxd_pid=$!
  pids+=("$ctxd_pid")
  wait_http "http://127.0.0.1:$ctxd_port/healthz" ||
    die "ctxd $name did not start: $(tail -5 "$tmp/ctxd-$name.log")"
}

record() { echo "$1" >>"$results"; }

# cmdstats_delta BEFORE AFTER: {"command": [calls, usec], ...} from two
# INFO commandstats outputs (Redis counts a script's or a transaction's
# inner commands under their own names too, and in the EVALSHA's or EXEC's
# time).
cmdstats_delta() {
  $py - "$1" "$2" <<'PY'
import json, re, sys
def load(p):
    out = {}
    for line in open(p):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
print(json.dumps({k: [v[0] - a.get(k, (0, 0))[0], v[1] - a.get(k, (0, 0))[1]]
                  for k, v in b.items() if v[0] > a.get(k, (0, 0))[0]}))
PY
}

# run_wrk KEY PORT CONNS MODE [VAR=VALUE...]: warm up, then measure for $dur s.
# wrk gives up on a request after $wrk_timeout (default 10s; S10 sets 2s) and
# counts it in err_timeout, not in the latencies.
run_wrk() {
  local key=$1 port=$2 conns=$3 mode=$4 threads=2 out line timeout=${wrk_timeout:-10s}
  shift 4
  [ "$conns" -lt 2 ] && threads=1
  local w=(env BENCH_MODE="$mode" BENCH_THREADS=$threads "$@" wrk -t$threads -c"$conns"
           --timeout "$timeout" -s "$here/wrk.lua" "http://127.0.0.1:$port")
  "${w[@]}" -d"${warm}s" >/dev/null
  local cpu0 cpu1 cs
  rcli INFO commandstats >"$tmp/cs0"
  cpu0=$(redis_cpu "$rport")
  out=$("${w[@]}" -d"${dur}s")
  cpu1=$(redis_cpu "$rport")
  rcli INFO commandstats >"$tmp/cs1"
  line=$(grep '^BENCH ' <<<"$out" | head -1 | cut -c7-)
  [ -n "$line" ] || die "$key: wrk printed no summary: $out"
  cs=$(cmdstats_delta "$tmp/cs0" "$tmp/cs1")
  record "{\"key\":\"$key\",\"conns\":$conns,\"timeout\":\"$timeout\",\"redis_cpu_s\":$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.6f", b-a}'),\"cmdstats\":$cs,\"wrk\":$line}"
  say "$key: $($py -c 'import json,sys; w=json.loads(sys.argv[1]); print("%.0f req/s p50 %.2f ms p99 %.2f ms max %.2f ms errors %d (timeouts %d)" % (w["rps"], w["p50_us"]/1e3, w["p99_us"]/1e3, w["max_us"]/1e3, w["errors"], w["err_timeout"]))' "$line")"
}

# established PORT: TCP connections established to 127.0.0.1:PORT, as the
# server's side sees them (null without ss).
established() {
  if command -v ss >/dev/null; then
    ss -Htn state established "( sport = :$1 )" | wc -l
  else
    echo null
  fi
}

say "redis :$rport, fake upstream :$fport, $(nproc) cores, quick=$quick"
record "{\"key\":\"env\",\"quick\":$quick,\"cores\":$(nproc),\"warm_s\":$warm,\"dur_s\":$dur,\"date\":\"$(date -u +%FT%TZ)\",\"commit\":\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\",\"dirty\":$([ -z "$(git status --porcelain -uno 2>/dev/null)" ] && echo false || echo true),\"redis\":\"$(redis-server --version | awk '{print $3}' | cut -d= -f2)\"}"

# ---- Main ctxd: echo provider, default 64 threads, default log level ----
start_ctxd main
main_port=$ctxd_port main_pid=$ctxd_pid

# Framework floor, and one connection alone (a ~40 ms p50 there is a
# Nagle / delayed-ACK stall, not work).
run_wrk healthz "$main_port" 64 healthz
run_wrk healthz_c1 "$main_port" 1 healthz

# Scenario 1: GET a context holding 20 messages, 64 connections.
$py "$here/prep.py" create "$main_port" 1 "$tmp/s1.ids"
$py "$here/prep.py" fill "$main_port" "$tmp/s1.ids" 20 >/dev/null
run_wrk s1 "$main_port" 64 get BENCH_IDS="$tmp/s1.ids"

# Scenario 11: the cost of API keys. The same context read on a ctxd with
# CTXD_AUTH=keys, with a key of the tenant "default" (whose contexts keep
# their old names, so it reads S1's context), right after the same read with
# auth off on the main ctxd.
admin_token=bench-admin-token-$$-0123456789
start_ctxd s11 CTXD_AUTH=keys CTXD_ADMIN_TOKEN=$admin_token
s11_port=$ctxd_port
s11_key=$(CTXD_REDIS_URL="redis://127.0.0.1:$rport/0" "$bin" keys create --tenant default \
  --scopes read --name bench 2>/dev/null) || die "s11: ctxd keys create failed"
run_wrk s11_off "$main_port" 64 get BENCH_IDS="$tmp/s1.ids"
run_wrk s11_keys "$s11_port" 64 get BENCH_IDS="$tmp/s1.ids" BENCH_AUTH="$s11_key"
stop_pid "$ctxd_pid"

# Storage floor: redis-benchmark on the same Redis, 64 clients, no pipelining,
# the built-in mix plus what scenario 1's read script does on its real keys.
s1id=$(head -1 "$tmp/s1.ids")
k_meta="ctxd:{$s1id}:meta" k_msgs="ctxd:{$s1id}:messages" k_state="ctxd:{$s1id}:state"
read_sha=$(rcli SCRIPT LOAD "local m = redis.call('HGETALL', KEYS[1]) local n = redis.call('LLEN', KEYS[2]) local l = redis.call('LRANGE', KEYS[2], 0, -1) local s = redis.call('HGETALL', KEYS[3]) return {m, l, s, n}")
rb() { redis-benchmark -p "$rport" -c 64 -n "$rb_n" --csv "$@" 2>/dev/null | tail -n +2; }
{
  rb -t get,set,lpush,lrange_100
  rb HGETALL "$k_meta"
  rb LRANGE "$k_msgs" 0 -1
  rb EVALSHA "$read_sha" 3 "$k_meta" "$k_msgs" "$k_state"
} | $py -c '
import csv, json, sys
rows = []
for r in csv.reader(sys.stdin):
    if len(r) >= 7 and "needed to benchmark" not in r[0]:
        name = r[0].split(" ctxd:")[0].split(" {")[0] if r[0].startswith(("HGETALL", "LRANGE ctxd", "EVALSHA")) else r[0]
        if name.startswith("EVALSHA"): name = "EVALSHA read-script (20 msgs)"
        elif name.startswith("LRANGE") and "ctxd" in r[0]: name = "LRANGE 0 -1 (20 msgs)"
        elif name.startswith("HGETALL"): name = "HGETALL meta"
        rows.append({"test": name, "rps": float(r[1]), "p50_ms": float(r[4]), "p99_ms": float(r[6])})
print(json.dumps({"key": "redis", "clients": 64, "rows": rows}))' >>"$results"
say "redis-benchmark: $(tail -1 "$results" | cut -c1-300)..."

# Scenario 2: echo turns spread over 1,000 contexts, 64 connections.
$py "$here/prep.py" create "$main_port" 1000 "$tmp/s2.ids"
run_wrk s2 "$main_port" 64 turn BENCH_IDS="$tmp/s2.ids"

# Scenario 12: echo turns on contexts with a 20-message window (strategy
# window, max_messages 20, each holding 20 messages before the run), 64
# connections: the turn's Redis cost, beside scenario 1's read.
$py "$here/prep.py" create "$main_port" 1000 "$tmp/s12.ids" '{"strategy":"window","max_messages":20}'
$py "$here/prep.py" fill "$main_port" "$tmp/s12.ids" 20 >/dev/null
run_wrk s12 "$main_port" 64 turn BENCH_IDS="$tmp/s12.ids"

# Scenario 4: turn latency against stored history length (windowed).
win_body='{"strategy":"window","max_context_tokens":2000}'
probe=$($py "$here/prep.py" probe "$main_port" "$win_body")
if $py -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["status"] == 201 else 1)' "$probe"; then
  s4_mode=window s4_body=$win_body s4_skip=""
  set -- $s4_turns_win $s4_turns_win $s4_turns_win
else
  s4_mode=full s4_body="" s4_turns_list=$s4_turns
  s4_skip=$($py -c 'import json,sys; p=json.loads(sys.argv[1]); print("POST /mcp/context %s was refused: HTTP %s %s" % (sys.argv[2], p["status"], p["body"][:160]))' "$probe" "$win_body")
  say "scenario 4: SKIP windowed: $s4_skip; measuring full-history turns instead (informational)"
  set -- $s4_turns
fi
s4_rows=""
for size in $s4_sizes; do
  turns=$1
  shift
  # One context per size, the same number of turns each: every window then
  # grows the same way and only the stored length differs.
  ctxs=1
  if [ -n "$s4_body" ]; then
    $py "$here/prep.py" create "$main_port" $ctxs "$tmp/s4-$size.ids" "$s4_body"
  else
    $py "$here/prep.py" create "$main_port" $ctxs "$tmp/s4-$size.ids"
  fi
  # Messages of ~720 bytes (~184 tokens): every window holds about ten of
  # them whatever the history length, so only the length differs.
  fill=$($py "$here/prep.py" fill "$main_port" "$tmp/s4-$size.ids" "$size" 720)
  line=$($py "$here/prep.py" turns "$main_port" "$tmp/s4-$size.ids" "$turns")
  say "s4 history $size ($ctxs contexts, $turns turns): $line"
  s4_rows="$s4_rows${s4_rows:+,}{\"history\":$size,\"contexts\":$ctxs,\"turns\":$turns,\"fill\":$fill,\"wrk\":$line}"
done
record "{\"key\":\"s4\",\"mode\":\"$s4_mode\",\"skip\":$($py -c 'import json,sys; print(json.dumps(sys.argv[1] or None))' "$s4_skip"),\"rows\":[$s4_rows]}"

# Scenario 7: Redis bytes per stored message at 10,000 messages.
$py "$here/prep.py" create "$main_port" 1 "$tmp/s7.ids"
fill=$($py "$here/prep.py" fill "$main_port" "$tmp/s7.ids" $s7_count $s7_size)
s7id=$(head -1 "$tmp/s7.ids")
mem=$(rcli MEMORY USAGE "ctxd:{$s7id}:messages" SAMPLES 0)
stored=$(rcli --raw LINDEX "ctxd:{$s7id}:messages" 0 | head -c 400)
record "$($py -c 'import json,sys; f=json.loads(sys.argv[1]); print(json.dumps({"key":"s7","messages":int(sys.argv[2]),"content_bytes":int(sys.argv[3]),"raw_bytes":f["raw_bytes"],"redis_bytes":int(sys.argv[4]),"sample_stored":sys.argv[5]}))' "$fill" $s7_count $s7_size "$mem" "$stored")"
say "s7: MEMORY USAGE $mem bytes for $s7_count messages; raw $(tail -1 "$results" | $py -c 'import json,sys; print(json.load(sys.stdin)["raw_bytes"])') bytes"
stop_pid "$main_pid"

# ---- Scenario 3 and the upstream floor: Anthropic provider vs the fake ----
start_ctxd anthropic CTXD_PROVIDER=anthropic ANTHROPIC_API_KEY=bench-key \
  CTXD_ANTHROPIC_URL="http://127.0.0.1:$fport"
anth_pid=$ctxd_pid anth_port=$ctxd_port
$py "$here/prep.py" create "$anth_port" 1000 "$tmp/s3.ids"
for c in 1 8; do
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$fport/_admin/reset"
  run_wrk "s3_c$c" "$anth_port" $c turn BENCH_IDS="$tmp/s3.ids"
  $py "$here/prep.py" capture "$fport" "$tmp/upstream-body.json" >/dev/null
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$fport/_admin/reset"
  run_wrk "upstream_c$c" "$fport" $c direct BENCH_BODY="$tmp/upstream-body.json" BENCH_APIKEY=bench-key
done
curl -sf -o /dev/null -X POST "http://127.0.0.1:$fport/_admin/reset"
# Scenario 8: the token estimate against the upstream's counts.
s8=$($py "$here/prep.py" tokens "$anth_port" 40)
say "s8: token estimate vs upstream: $s8"
record "{\"key\":\"s8\",\"result\":$s8}"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$fport/_admin/reset"
stop_pid "$anth_pid"

# ---- Scenario 5: N streaming turns held open at once ----
# The echo provider streams its reply word by word over CTXD_ECHO_DELAY_MS=2000.
s5_rows=""
for n in $s5_ns; do
  threads=$((n + 16)) # a streamed turn holds its worker thread
  start_ctxd "s5-$n" CTXD_ECHO_DELAY_MS=2000 CTXD_THREADS=$threads
  $py "$here/prep.py" create "$ctxd_port" "$n" "$tmp/s5.ids"
  row=$($py "$here/streams.py" "$ctxd_port" "$tmp/s5.ids" "$n" 60)
  hwm=$(awk '/^VmHWM/{print $2}' "/proc/$ctxd_pid/status")
  nthreads=$(awk '/^Threads/{print $2}' "/proc/$ctxd_pid/status")
  say "s5 N=$n threads=$threads: $row VmHWM ${hwm} kB"
  s5_rows="$s5_rows${s5_rows:+,}{\"threads\":$threads,\"os_threads\":$nthreads,\"vmhwm_kb\":$hwm,\"result\":$row}"
  stop_pid "$ctxd_pid"
done
record "{\"key\":\"s5\",\"provider\":\"echo, CTXD_ECHO_DELAY_MS=2000, streaming\",\"rows\":[$s5_rows]}"

# ---- Scenario 9: requests while hostile connections are held ----
# A ctxd of its own with the default limits (64 workers, request head within
# 10 s, body within 20 s). hostile.py holds 500 idle, 200 slowloris and 200
# slow-body connections on it, one more byte every 0.5-1 s on the slow ones,
# and re-opens at once any that ctxd closes (408 at those limits, or silently
# for an idle one), so all 900 stay held however long the runs take; wrk
# measures /healthz and scenario 1's read meanwhile, 16 connections.
s9_idle=500 s9_slowloris=200 s9_slowbody=200 s9_conns=16
start_ctxd s9
s9_port=$ctxd_port s9_pid=$ctxd_pid
$py "$here/hostile.py" "$s9_port" "$s1id" $s9_idle $s9_slowloris $s9_slowbody \
  >"$tmp/hostile.out" 2>"$tmp/hostile.err" &
hostile_pid=$!
pids+=("$hostile_pid")
for _ in $(seq 300); do grep -q '^READY ' "$tmp/hostile.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY ' "$tmp/hostile.out" ||
  die "hostile.py did not open its connections: $(tail -3 "$tmp/hostile.err")"
s9_est_start=$(established "$s9_port")
say "s9: hostile connections $(grep '^READY ' "$tmp/hostile.out" | cut -c7-), ctxd side $s9_est_start established"
run_wrk s9_healthz "$s9_port" $s9_conns healthz
run_wrk s9_get "$s9_port" $s9_conns get BENCH_IDS="$tmp/s1.ids"
s9_est_end=$(established "$s9_port")
kill -TERM "$hostile_pid"
wait "$hostile_pid" || die "hostile.py failed: $(tail -3 "$tmp/hostile.err")"
s9_held=$(grep -v '^READY ' "$tmp/hostile.out" | tail -1)
say "s9: held $s9_held; ctxd side $s9_est_end established at the end"
record "{\"key\":\"s9\",\"idle\":$s9_idle,\"slowloris\":$s9_slowloris,\"slowbody\":$s9_slowbody,\"established_start\":$s9_est_start,\"established_end\":$s9_est_end,\"held\":$s9_held}"
stop_pid "$s9_pid"

# ---- Scenario 6: 1 vs 3 ctxd processes behind haproxy, scenario-2 workload ----
# Four processes: the 1-process backend has its own ctxd, so connections
# haproxy keeps open to it cannot occupy the threads of the 3-process backend.
# Scenario 10 (256 client connections to one replica) has a fifth ctxd and a
# frontend of its own in the same haproxy.
s6_ports=()
for i in 0 1 2 3; do
  start_ctxd "s6-$i"
  s6_ports+=("$ctxd_port")
done
start_ctxd s10
s10_port=$ctxd_port
hp1=$(free_port) hp3=$(free_port) hp10=$(free_port)
cat >"$tmp/haproxy.cfg" <<EOF
global
    maxconn 4000
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
frontend one
    bind 127.0.0.1:$hp1
    default_backend one
frontend three
    bind 127.0.0.1:$hp3
    default_backend three
frontend ten
    bind 127.0.0.1:$hp10
    default_backend ten
backend one
    balance roundrobin
    server c0 127.0.0.1:${s6_ports[0]}
backend three
    balance roundrobin
    server c1 127.0.0.1:${s6_ports[1]}
    server c2 127.0.0.1:${s6_ports[2]}
    server c3 127.0.0.1:${s6_ports[3]}
backend ten
    balance roundrobin
    server c10 127.0.0.1:$s10_port
EOF
haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$hp3/healthz" || die "haproxy did not start: $(tail -5 "$tmp/haproxy.log")"
run_wrk s6_1 "$hp1" 64 turn BENCH_IDS="$tmp/s2.ids"
run_wrk s6_3 "$hp3" 64 turn BENCH_IDS="$tmp/s2.ids"

# ---- Scenario 10: 256 client connections through haproxy to one ctxd ----
# Scenario 1's read and scenario 2's turn (over 1,000 fresh contexts, so the
# histories are as short as in scenario 2), wrk timeout 2 s.
wait_http "http://127.0.0.1:$hp10/healthz" || die "haproxy frontend ten does not answer"
$py "$here/prep.py" create "$hp10" 1000 "$tmp/s10.ids"
wrk_timeout=2s run_wrk s10_get "$hp10" 256 get BENCH_IDS="$tmp/s1.ids"
wrk_timeout=2s run_wrk s10_turn "$hp10" 256 turn BENCH_IDS="$tmp/s10.ids"

# ---- Report ----
mkdir -p bench
$py "$here/report.py" "$results" bench
say "wrote bench/results.md bench/results.json bench/scaling.png"
cat bench/results.md
