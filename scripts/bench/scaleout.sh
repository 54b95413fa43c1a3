#!/usr/bin/env bash
# scaleout.sh: scripts/bench.sh --scaleout. The context GET and the echo turn
# (20-message window) against 1, 2, 4 ... ctxd processes behind haproxy, on
# one Redis and on a 3-master Redis Cluster; req/s and Redis CPU per request
# (used_cpu_* of every Redis node, around each run, over the requests made).
#   scaleout.sh BIN OUTDIR QUICK
# Needs redis-server, redis-cli, haproxy, wrk, curl and python3 on PATH.
# Writes OUTDIR/scaleout.md and OUTDIR/scaleout.json.
set -euo pipefail
bin=$1 outdir=$2 quick=${3:-0}
here=$(cd "$(dirname "$0")" && pwd)
py=${PY:-python3}
procs=${SCALEOUT_PROCS:-"1 2 4"}
conns=${SCALEOUT_CONNS:-64}
if [ "$quick" = 1 ]; then warm=1 dur=4; else warm=3 dur=15; fi

say() { echo "scaleout: $*" >&2; }
die() { echo "scaleout: $*" >&2; exit 1; }

# shellcheck source=scripts/bench/lib.sh
. "$here/lib.sh"
bench_tmp scaleout

# start_redis PORT [cluster]: a Redis without persistence.
start_redis() {
  local port=$1 extra=()
  [ "${2:-}" = cluster ] && extra=(--cluster-enabled yes --cluster-config-file "nodes-$port.conf")
  mkdir -p "$tmp/r$port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/r$port" --save "" --appendonly no \
    --maxclients 10000 --daemonize no --logfile "$tmp/r$port/redis.log" "${extra[@]}" &
  pids+=($!)
  wait_redis "$port" || die "redis-server on $port did not start"
}

# run KEY PORT MODE [VAR=VALUE...]: wrk against PORT; prints one JSON row.
run() {
  local key=$1 port=$2 mode=$3 c0 c1 out line
  shift 3
  local w=(env BENCH_MODE="$mode" BENCH_THREADS=2 "$@" wrk -t2 -c"$conns" --timeout 10s
           -s "$here/wrk.lua" "http://127.0.0.1:$port")
  "${w[@]}" -d"${warm}s" >/dev/null
  # shellcheck disable=SC2086 # $nodes is a list of ports
  c0=$(redis_cpu $nodes)
  out=$("${w[@]}" -d"${dur}s")
  # shellcheck disable=SC2086
  c1=$(redis_cpu $nodes)
  line=$(grep '^BENCH ' <<<"$out" | head -1 | cut -c7-)
  [ -n "$line" ] || die "$key: wrk printed no summary: $out"
  echo "{\"key\":\"$key\",\"redis_cpu_s\":$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.6f", b-a}'),\"wrk\":$line}"
}

# curve TOPOLOGY URL: for each N in $procs, N ctxd behind haproxy.
curve() {
  local topo=$1 url=$2 n i ports hp cfg
  for n in $procs; do
    ports=() cpids=()
    for i in $(seq "$n"); do
      local p
      p=$(free_port)
      env -u ANTHROPIC_API_KEY -u OPENAI_API_KEY CTXD_LISTEN="127.0.0.1:$p" CTXD_REDIS_URL="$url" \
        CTXD_PROVIDER=echo CTXD_LOG_LEVEL=warn "$bin" >"$tmp/ctxd-$topo-$n-$i.log" 2>&1 &
      pids+=($!) cpids+=($!)
      ports+=("$p")
    done
    for p in "${ports[@]}"; do
      wait_http "http://127.0.0.1:$p/healthz" || die "ctxd did not start: $(tail -3 "$tmp"/ctxd-$topo-$n-*.log)"
    done
    hp=$(free_port)
    cfg=$tmp/haproxy-$topo-$n.cfg
    {
      printf 'global\n    maxconn 4000\ndefaults\n    mode http\n    timeout connect 3s\n'
      printf '    timeout client 60s\n    timeout server 60s\n    timeout http-keep-alive 10s\n'
      printf 'frontend f\n    bind 127.0.0.1:%s\n    default_backend b\nbackend b\n    balance roundrobin\n' "$hp"
      for i in "${!ports[@]}"; do printf '    server c%d 127.0.0.1:%s\n' "$i" "${ports[$i]}"; done
    } >"$cfg"
    haproxy -f "$cfg" -db >"$tmp/haproxy-$topo-$n.log" 2>&1 &
    local hpid=$!
    pids+=("$hpid")
    wait_http "http://127.0.0.1:$hp/healthz" || die "haproxy did not start"
    $py "$here/prep.py" create "$hp" 1 "$tmp/get.ids"
    $py "$here/prep.py" fill "$hp" "$tmp/get.ids" 20 >/dev/null
    $py "$here/prep.py" create "$hp" 1000 "$tmp/turn.ids" '{"strategy":"window","max_messages":20}'
    $py "$here/prep.py" fill "$hp" "$tmp/turn.ids" 20 >/dev/null
    local get turn
    get=$(run "get" "$hp" get BENCH_IDS="$tmp/get.ids")
    turn=$(run "turn" "$hp" turn BENCH_IDS="$tmp/turn.ids")
    echo "{\"topology\":\"$topo\",\"processes\":$n,\"get\":$get,\"turn\":$turn}" >>"$tmp/rows.jsonl"
    say "$topo, $n process(es): $($py -c 'import json,sys; g=json.loads(sys.argv[1]); t=json.loads(sys.argv[2]); f=lambda x: "%.0f req/s, %.1f us Redis CPU/req, errors %d" % (x["wrk"]["rps"], x["redis_cpu_s"]*1e6/max(1,x["wrk"]["requests"]), x["wrk"]["errors"]); print("GET " + f(g) + "; turn " + f(t))' "$get" "$turn")"
    kill "$hpid" "${cpids[@]}" 2>/dev/null || true
    wait "$hpid" "${cpids[@]}" 2>/dev/null || true
  done
}

: >"$tmp/rows.jsonl"
# One Redis.
rp=$(free_port)
start_redis "$rp"
nodes=$rp
curve single "redis://127.0.0.1:$rp/0"
redis-cli -p "$rp" SHUTDOWN NOSAVE >/dev/null 2>&1 || true

# A 3-master Redis Cluster (no replicas: the cost of routing, not of
# replication).
cluster=()
for _ in 1 2 3; do
  p=$(free_port)
  start_redis "$p" cluster
  cluster+=("$p")
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster[@]}") --cluster-replicas 0 \
  --cluster-yes >"$tmp/cluster-create.log" 2>&1 || die "cluster create: $(tail -5 "$tmp/cluster-create.log")"
for _ in $(seq 100); do
  ok=1
  for p in "${cluster[@]}"; do
    redis-cli -p "$p" CLUSTER INFO | grep -q '^cluster_state:ok' || ok=0
  done
  [ $ok = 1 ] && break
  sleep 0.1
done
[ $ok = 1 ] || die "the cluster did not come up"
nodes="${cluster[*]}"
curve cluster "redis://$(printf '127.0.0.1:%s,' "${cluster[@]}" | sed 's/,$//')"

mkdir -p "$outdir"
$py - "$tmp/rows.jsonl" "$outdir" "$(nproc)" "$quick" "$dur" "$conns" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
outdir, cores, quick, dur, conns = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5], sys.argv[6]
json.dump({"cores": cores, "quick": quick, "rows": rows}, open(outdir + "/scaleout.json", "w"), indent=1)
def cell(x):
    n = max(1, x["wrk"]["requests"])
    return "%.0f | %.1f | %d" % (x["wrk"]["rps"], x["redis_cpu_s"] * 1e6 / n, x["wrk"]["errors"])
out = ["# ctxd scale-out (%s)" % ("--quick" if quick else "full"), "",
       "%d cores; wrk %s connections through haproxy (round robin) for %s s per run; "
       "GET: one context of 20 messages; turn: echo turns over 1,000 contexts with a "
       "20-message window. Redis CPU: used_cpu_user + used_cpu_sys of every Redis node "
       "around the run, over the requests made." % (cores, conns, dur), ""]
if cores <= 4:
    out += ["On %d cores, Redis, haproxy, wrk and every ctxd share the same CPUs: more "
            "processes add overhead (context switches, more Redis connections), not "
            "throughput. The curve shows what each process costs; a speed-up needs a "
            "machine with cores to spare." % cores, ""]
out += ["| Redis | ctxd processes | GET req/s | GET Redis CPU us/req | GET errors | "
        "turn req/s | turn Redis CPU us/req | turn errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    out.append("| %s | %d | %s | %s |" % ("one server" if r["topology"] == "single" else
                                         "3-master cluster", r["processes"], cell(r["get"]),
                                         cell(r["turn"])))
open(outdir + "/scaleout.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
