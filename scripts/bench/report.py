#!/usr/bin/python3
"""report.py: turn scripts/bench.sh's results.jsonl into results.md, results.json
and scaling.png (gnuplot).

    report.py RESULTS_JSONL OUT_DIR
"""
import json
import os
import subprocess
import sys


# Commands ctxd sends on their own in the measured scenarios, listed per
# request: a read is one MULTI/EXEC; a turn on one server SET and WATCH (and
# its reads), then one MULTI/EXEC (the append; EVALSHA when that is refused)
# with the activity index's ZADD, and more only under contention.
TOP_LEVEL = {"evalsha", "eval", "exec", "multi", "set", "watch", "zadd", "zrem", "blpop",
             "ping", "wait", "publish"}
# Commands whose time includes others' (and INFO, the bench's own).
CONTAINERS = {"exec", "multi", "evalsha", "eval", "info"}


def load(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line:
            o = json.loads(line)
            out[o.pop("key")] = o
    return out


def ms(us):
    return us / 1000.0


def verdict(ok):
    return "PASS" if ok else "MISS"


class Report:
    def __init__(self, r):
        self.r = r
        self.rows = []     # (measure, req/s, p50, p99, errors, note)
        self.targets = []  # (target, measured, verdict)
        self.notes = []

    def wrk_row(self, name, key, note=""):
        w = self.r[key]["wrk"]
        self.rows.append((name, "%.0f" % w["rps"], "%.2f" % ms(w["p50_us"]),
                          "%.2f" % ms(w["p99_us"]), str(w["errors"]), note))
        return w

    def floors(self):
        h = self.wrk_row("Framework floor: GET /healthz (64 conns)", "healthz")
        one = self.wrk_row("GET /healthz, 1 conn (diagnostic)", "healthz_c1")
        if one["p50_us"] >= 30000:
            self.notes.append(
                "GET /healthz on one idle connection takes %.1f ms at p50 although the "
                "handler does no I/O: each response leaves in several small send() calls "
                "without TCP_NODELAY, so Nagle waits for the client's delayed ACK (~40 ms). "
                "Every HTTP number above and below carries that stall; the ratios to "
                "/healthz hide it." % ms(one["p50_us"]))
        for row in self.r["redis"]["rows"]:
            self.rows.append(("Storage floor: redis-benchmark %s (64 clients)" % row["test"],
                              "%.0f" % row["rps"], "%.3f" % row["p50_ms"],
                              "%.3f" % row["p99_ms"], "-", "no pipelining"))
        for c in (1, 8):
            self.wrk_row("Upstream floor: fake /v1/messages direct (%d conn%s)"
                         % (c, "s" if c > 1 else ""), "upstream_c%d" % c,
                         "same body ctxd sent")
        return h

    def scenarios(self, h):
        s1 = self.wrk_row("S1 GET /mcp/context/{id}, 20 messages (64 conns)", "s1",
                          "%.2fx healthz" % (self.r["s1"]["wrk"]["rps"] / h["rps"]))
        self.targets.append(("S1 >= 0.5x /healthz req/s",
                             "%.2fx" % (s1["rps"] / h["rps"]),
                             verdict(s1["rps"] >= 0.5 * h["rps"] and not s1["errors"])))
        s2 = self.wrk_row("S2 echo turn over 1,000 contexts (64 conns)", "s2",
                          "%.2fx healthz" % (self.r["s2"]["wrk"]["rps"] / h["rps"]))
        self.targets.append(("S2 >= 0.3x /healthz req/s",
                             "%.2fx" % (s2["rps"] / h["rps"]),
                             verdict(s2["rps"] >= 0.3 * h["rps"] and not s2["errors"])))
        if "s12" in self.r:
            s12 = self.wrk_row("S12 echo turn, 20-message window, 1,000 contexts (64 conns)",
                               "s12", "%.2fx healthz" % (self.r["s12"]["wrk"]["rps"] / h["rps"]))
            self.targets.append(("S12 (20-message window) >= 0.3x /healthz req/s",
                                 "%.2fx" % (s12["rps"] / h["rps"]),
                                 verdict(s12["rps"] >= 0.3 * h["rps"] and not s12["errors"])))
        for c in (1, 8):
            via = self.r["s3_c%d" % c]["wrk"]
            up = self.r["upstream_c%d" % c]["wrk"]
            d50, d99 = ms(via["p50_us"] - up["p50_us"]), ms(via["p99_us"] - up["p99_us"])
            self.wrk_row("S3 anthropic turn via ctxd (%d conn%s)" % (c, "s" if c > 1 else ""),
                         "s3_c%d" % c, "adds p50 %+.2f ms, p99 %+.2f ms" % (d50, d99))
            self.targets.append(("S3 <= 1 ms added at p50 (%d conn%s)" % (c, "s" if c > 1 else ""),
                                 "%+.2f ms (p99 %+.2f ms)" % (d50, d99),
                                 verdict(d50 <= 1.0 and not via["errors"])))
        self.s4()
        self.s5()
        self.s6()
        self.s7()
        self.s8()
        self.s9()
        self.s10()
        self.s11()
        self.redis_cpu()

    def s4(self):
        s4 = self.r["s4"]
        rows = {x["history"]: x for x in s4["rows"]}
        label = "windowed, max_context_tokens 2000" if s4["mode"] == "window" else \
            "FULL history (windowing not available)"
        for hlen, x in sorted(rows.items()):
            w = x["wrk"]
            self.rows.append(("S4 turn, %s stored messages (%s, 1 conn)" % (format(hlen, ","), label),
                              "%.0f" % w["rps"], "%.2f" % ms(w["p50_us"]), "%.2f" % ms(w["p99_us"]),
                              str(w["errors"]), "%d turns over %d context%s" % (
                                  x["turns"], x["contexts"], "s" if x["contexts"] > 1 else "")))
        lo, hi = rows.get(10), rows.get(100000)
        ratio = hi["wrk"]["p50_us"] / max(1, lo["wrk"]["p50_us"]) if lo and hi else None
        if s4["mode"] == "window":
            self.targets.append(("S4 p50 at 100,000 within 1.2x of 10", "%.2fx" % ratio,
                                 verdict(ratio <= 1.2)))
        else:
            self.targets.append(("S4 p50 at 100,000 within 1.2x of 10",
                                 "full history: %.1fx (informational)" % ratio,
                                 "SKIP: " + s4["skip"]))

    def s5(self):
        s5 = self.r["s5"]
        by_n = {}
        for x in s5["rows"]:
            res = x["result"]
            by_n[res["n"]] = (x, res)
            why = ", ".join("%s: %d" % kv for kv in res["fail_reasons"].items()) or "none"
            self.rows.append(("S5 %d streaming turns at once (%s; CTXD_THREADS=%d)"
                              % (res["n"], s5["provider"], x["threads"]),
                              "-", "%s" % res["total_p50_ms"], "%s" % res["total_p99_ms"],
                              str(res["failed"]),
                              "completed %d, held open at once %d, peak RSS %.1f MiB, "
                              "failures: %s" % (res["completed"], res["peak_open"],
                                                x["vmhwm_kb"] / 1024.0, why)))
        if 2000 in by_n:
            x, res = by_n[2000]
            ok = res["failed"] == 0 and res["peak_open"] >= 2000
            self.targets.append(("S5 2,000 concurrent streams, one process, no failure",
                                 "completed %d, failed %d, held at once %d"
                                 % (res["completed"], res["failed"], res["peak_open"]),
                                 verdict(ok)))
        else:
            self.targets.append(("S5 2,000 concurrent streams, one process, no failure",
                                 "N=2000 not run (--quick: N = %s)" % ", ".join(map(str, sorted(by_n))),
                                 "NOT RUN"))

    def s6(self):
        one, three = self.r["s6_1"]["wrk"], self.r["s6_3"]["wrk"]
        self.wrk_row("S6 scenario-2 workload, 1 ctxd behind haproxy (64 conns)", "s6_1")
        self.wrk_row("S6 scenario-2 workload, 3 ctxd behind haproxy (64 conns)", "s6_3",
                     "%.2fx of 1 process" % (three["rps"] / one["rps"]))
        cores = self.r["env"]["cores"]
        self.notes.append(
            "S6 runs wrk, haproxy, Redis and every ctxd on the same %d core%s: 3 processes "
            "cannot add CPU, so the 3-vs-1 ratio (%.2fx) shows the cost of the extra hop "
            "and processes, not a speed-up." % (cores, "s" if cores > 1 else "",
                                              three["rps"] / one["rps"]))

    def s7(self):
        s7 = self.r["s7"]
        per_redis = s7["redis_bytes"] / s7["messages"]
        per_raw = s7["raw_bytes"] / s7["messages"]
        ratio = s7["redis_bytes"] / s7["raw_bytes"]
        self.rows.append(("S7 Redis bytes per message at %s messages" % format(s7["messages"], ","),
                          "-", "-", "-", "-",
                          "%.0f B in Redis vs %.0f B raw JSON (%.2fx); content %d B"
                          % (per_redis, per_raw, ratio, s7["content_bytes"])))
        self.targets.append(("S7 Redis bytes <= 1.5x raw JSON bytes", "%.2fx" % ratio,
                             verdict(ratio <= 1.5)))
        self.notes.append("S7: one stored message as ctxd writes it: `%s`" % s7["sample_stored"][:300])

    def s8(self):
        if "s8" not in self.r:
            return
        x = self.r["s8"]["result"]
        self.rows.append(("S8 token estimate (bytes / 4 + 4) vs the upstream's count, new "
                          "messages of 40-440 B", "-", "-", "-", "-",
                          "mean abs error %.1f%%, p90 %.1f%%, max %.1f%%, bias %+.1f%% over %d "
                          "turns (fake upstream counts as its docstring says)"
                          % (x["mean_abs_pct"], x["p90_abs_pct"], x["max_abs_pct"],
                             x["mean_pct"], x["samples"])))

    def s9(self):
        if "s9" not in self.r:
            return
        s9 = self.r["s9"]
        held = s9["held"]
        kinds = (("idle", "idle"), ("slowloris", "slowloris"), ("slowbody", "slow-body"))
        total = s9["idle"] + s9["slowloris"] + s9["slowbody"]
        shape = "%d idle, %d slowloris, %d slow-body" % (s9["idle"], s9["slowloris"],
                                                         s9["slowbody"])
        closed = sum(held[k]["closed_by_server"] for k, _ in kinds)
        if closed:
            churn = ("ctxd closed %d in %.1f s (%s) and hostile.py re-opened each at once"
                     % (closed, held["held_s"],
                        ", ".join("%s %d, %d with 408" % (label, held[k]["closed_by_server"],
                                                          held[k]["answered_408"])
                                  for k, label in kinds)))
        else:
            churn = ("ctxd closed none in %.1f s (both runs end before its 10 s head "
                     "limit), so none was re-opened" % held["held_s"])
        self.rows.append((
            "S9 hostile connections held during both S9 runs (%s)" % shape, "-", "-", "-",
            str(held["connect_failed"]),
            "open at the end %d of %d (%s), fewest open after a trickle round %d; %s; "
            "%d bytes trickled; ctxd's side: %s established before the runs, %s after"
            % (held["open_at_end"], total,
               ", ".join("%s %d" % (label, held[k]["open_at_end"]) for k, label in kinds),
               held["min_open"], churn, held["trickled_bytes"],
               s9["established_start"], s9["established_end"])))
        for key, what in (("s9_healthz", "GET /healthz"),
                          ("s9_get", "GET /mcp/context/{id}, 20 messages")):
            w = self.r[key]["wrk"]
            name = "S9 %s, %d hostile connections held (%d conns)" % (
                what, total, self.r[key]["conns"])
            self.wrk_row(name, key, "max %.2f ms" % ms(w["max_us"]))
            self.targets.append(("S9 %s p99 < 1 s, %d hostile connections held" % (what, total),
                                 "p99 %.2f ms, max %.2f ms, errors %d, held at the end %d"
                                 % (ms(w["p99_us"]), ms(w["max_us"]), w["errors"],
                                    held["open_at_end"]),
                                 verdict(w["p99_us"] < 1e6 and not w["errors"])))

    def s10(self):
        for key, what in (("s10_get", "GET /mcp/context/{id}, 20 messages"),
                          ("s10_turn", "echo turn over 1,000 contexts")):
            if key not in self.r:
                continue
            x = self.r[key]
            w = x["wrk"]
            self.wrk_row("S10 %s, 1 ctxd behind haproxy (%d conns)" % (what, x["conns"]), key,
                         "max %.2f ms, timeouts %d (wrk --timeout %s)"
                         % (ms(w["max_us"]), w["err_timeout"], x["timeout"]))
            self.targets.append(("S10 %s via haproxy, %d conns: max < 1 s, no timeouts"
                                 % (what, x["conns"]),
                                 "max %.2f ms, timeouts %d, other errors %d"
                                 % (ms(w["max_us"]), w["err_timeout"],
                                    w["errors"] - w["err_timeout"]),
                                 verdict(w["max_us"] < 1e6 and not w["err_timeout"])))

    def redis_cpu(self):
        """Redis CPU per request, from INFO's used_cpu_* around each measured run
        (everything Redis did in that time, divided by the requests wrk made)."""
        for key, what in (("s1", "S1 context GET"), ("s2", "S2 echo turn"),
                          ("s12", "S12 echo turn, 20-message window")):
            x = self.r.get(key)
            if not x or "redis_cpu_s" not in x or not x["wrk"]["requests"]:
                continue
            n = x["wrk"]["requests"]
            us = x["redis_cpu_s"] * 1e6 / n
            cs = x.get("cmdstats", {})
            # Each command's own time, once: the commands a transaction or a
            # script ran count by themselves (EXEC's and EVALSHA's time
            # include them), so what EXEC or Lua adds is left out.
            top = {k: v for k, v in cs.items() if k in TOP_LEVEL}
            cmd_us = sum(v[1] for k, v in cs.items() if k not in CONTAINERS) / n
            per = ", ".join("%s %.2f" % (k.upper(), v[0] / n) for k, v in sorted(top.items()))
            self.rows.append(("Redis CPU per request, %s" % what, "-", "-", "-", "-",
                              "%.1f us of Redis CPU (%.3f s over %d requests); commands %.1f us "
                              "(per request: %s)" % (us, x["redis_cpu_s"], n, cmd_us, per)))
            if key == "s12":
                self.targets.append(("Redis CPU per echo turn (20-message window) <= 40 us",
                                     "%.1f us (commands alone %.1f us; the GET: %s)"
                                     % (us, cmd_us, self.get_cpu()), verdict(us <= 40)))

    def get_cpu(self):
        x = self.r.get("s1")
        if not x or not x["wrk"]["requests"]:
            return "-"
        return "%.1f us" % (x["redis_cpu_s"] * 1e6 / x["wrk"]["requests"])

    def s11(self):
        if "s11_keys" not in self.r:
            return
        off = self.wrk_row("S11 GET /mcp/context/{id}, auth off (64 conns)", "s11_off")
        keys = self.wrk_row("S11 GET /mcp/context/{id}, API key (CTXD_AUTH=keys, 64 conns)",
                            "s11_keys", "same read, one key cached by the process")
        loss = 1 - keys["rps"] / off["rps"] if off["rps"] else 0
        self.targets.append(("S11 API keys cost < 10% of context-read throughput",
                             "%.1f%% (%.0f vs %.0f req/s)" % (loss * 100, keys["rps"],
                                                             off["rps"]),
                             verdict(loss < 0.10 and not keys["errors"])))

    def markdown(self):
        env = self.r["env"]
        out = ["# ctxd benchmark (%s)" % ("--quick" if env["quick"] else "full"), "",
               "%s, commit %s%s, %d cores, Redis %s (no persistence), wrk warm-up %d s then %d s "
               "per run; latencies in ms. Everything on 127.0.0.1 in one machine."
               % (env["date"], env["commit"], " (dirty tree)" if env["dirty"] else "",
                  env["cores"], env["redis"], env["warm_s"], env["dur_s"]), "",
               "| Measure | req/s | p50 ms | p99 ms | errors | Note |",
               "|---|---:|---:|---:|---:|---|"]
        for r in self.rows:
            out.append("| " + " | ".join(r) + " |")
        out += ["", "## Targets (goals, not test failures)", "",
                "| Target | Measured | Result |", "|---|---|---|"]
        for t in self.targets:
            out.append("| " + " | ".join(t) + " |")
        out += [""] + ["- " + n for n in self.notes] + [""]
        return "\n".join(out)


def plot(r, outdir):
    """scaling.png: S4 p50 vs history, S5 streams vs N, S6 1 vs 3 processes."""
    d = os.path.join(outdir, ".plot")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "s4.dat"), "w") as f:
        for x in r["s4"]["rows"]:
            f.write("%d %.3f %.3f\n" % (x["history"], ms(x["wrk"]["p50_us"]), ms(x["wrk"]["p99_us"])))
    with open(os.path.join(d, "s5.dat"), "w") as f:
        for x in r["s5"]["rows"]:
            res = x["result"]
            f.write("%d %d %d %d %.1f\n" % (res["n"], res["completed"], res["failed"],
                                            res["peak_open"], x["vmhwm_kb"] / 1024.0))
    with open(os.path.join(d, "s6.dat"), "w") as f:
        f.write('0 "direct\\n(S2)" %.1f\n' % r["s2"]["wrk"]["rps"])
        f.write('1 "1 ctxd\\nhaproxy" %.1f\n' % r["s6_1"]["wrk"]["rps"])
        f.write('2 "3 ctxd\\nhaproxy" %.1f\n' % r["s6_3"]["wrk"]["rps"])
    s4title = "S4 turn p50/p99 vs stored messages (%s)" % (
        "windowed" if r["s4"]["mode"] == "window" else "full history")
    gp = """
set terminal pngcairo size 1800,560 font "sans,11"
set output "%(png)s"
set multiplot layout 1,3
set grid
set key top left
set title "%(s4title)s"
set logscale x
set xlabel "stored messages"
set ylabel "ms"
plot "%(d)s/s4.dat" using 1:2 with linespoints lw 2 title "p50", \\
     "" using 1:3 with linespoints lw 2 title "p99"
unset logscale x
set title "S5 streaming turns held open (2 s each)"
set xlabel "concurrent streams N"
set ylabel "streams"
set y2label "peak RSS MiB"
set y2tics
set ytics nomirror
plot "%(d)s/s5.dat" using 1:2 with linespoints lw 2 title "completed", \\
     "" using 1:3 with linespoints lw 2 title "failed", \\
     "" using 1:4 with linespoints lw 2 title "held at once", \\
     "" using 1:5 axes x1y2 with linespoints lw 2 dt 2 title "peak RSS (MiB)"
unset y2tics
unset y2label
set ytics mirror
set title "S6 echo turns, 64 conns (same cores: overhead, not speed-up)"
set xlabel ""
set ylabel "req/s"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set xrange [-0.6:2.6]
plot "%(d)s/s6.dat" using 1:3:xtic(2) with boxes notitle
unset multiplot
""" % {"png": os.path.join(outdir, "scaling.png"), "d": d, "s4title": s4title}
    try:
        subprocess.run(["gnuplot"], input=gp, text=True, check=True)
    finally:
        for f in ("s4.dat", "s5.dat", "s6.dat"):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    r = load(sys.argv[1])
    outdir = sys.argv[2]
    rep = Report(r)
    h = rep.floors()
    rep.scenarios(h)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(rep.markdown())
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"results": r,
                   "targets": [{"target": t, "measured": m, "result": v}
                               for t, m, v in rep.targets],
                   "notes": rep.notes}, f, indent=2)
        f.write("\n")
    plot(r, outdir)
    for t, m, v in rep.targets:
        print("%-4s %s: %s" % (v.split(":")[0], t, m), file=sys.stderr)


if __name__ == "__main__":
    main()
