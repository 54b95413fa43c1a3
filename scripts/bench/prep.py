#!/usr/bin/python3
"""prep.py: set-up and one-off measurements for scripts/bench.sh (stdlib only).

    prep.py create PORT N OUT [BODY_JSON]  create N contexts, ids to OUT
    prep.py fill PORT IDS COUNT [SIZE]     append COUNT messages to each context
                                           in batches of 1000 (POST .../messages);
                                           prints {"raw_bytes", "seconds"}
    prep.py probe PORT BODY_JSON           POST /mcp/context with BODY_JSON;
                                           prints {"status", "body"}
    prep.py turns PORT IDS COUNT           COUNT echo turns one after another on
                                           one connection, round robin over IDS
                                           (3 more first as warm-up); prints
                                           wrk.lua's summary fields
    prep.py capture PORT OUT               the last /v1/messages body the fake
                                           upstream received, to OUT
"""
import concurrent.futures
import http.client
import json
import sys
import time

WORDS = ("the quick brown fox jumps over a lazy dog while seven tired travellers "
         "ask about flights trains hotels weather prices and the coastline").split()


class Client:
    """One keep-alive connection to 127.0.0.1:port, reopened if dropped."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def text(i, size):
    """A deterministic message of about size bytes."""
    out, k = [], i
    while sum(len(w) + 1 for w in out) < size:
        out.append(WORDS[k % len(WORDS)])
        k = k * 7 + 3
    return "message %d: %s" % (i, " ".join(out))[:size]


def create(port, n, out, body):
    """Create on up to 32 connections at once (a slow round trip must not
    make set-up the longest part of a run)."""
    def some(k):
        c, got = Client(port), []
        for _ in range(k):
            st, raw = c.call("POST", "/mcp/context", body)
            if st != 201:
                raise RuntimeError("prep.py create: HTTP %d %s" % (st, raw[:300]))
            got.append(json.loads(raw)["context_id"])
        return got
    workers = min(32, n)
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        ids = [i for part in pool.map(some, shares) for i in part]
    with open(out, "w") as f:
        f.write("\n".join(ids) + "\n")


def fill(port, ids_file, count, size):
    c = Client(port)
    ids = [l.strip() for l in open(ids_file) if l.strip()]
    raw_bytes, t0 = 0, time.monotonic()
    for cid in ids:
        done = 0
        while done < count:
            batch = []
            for i in range(done, min(count, done + 1000)):
                batch.append({"role": "user" if i % 2 == 0 else "assistant",
                              "content": text(i, size)})
            raw_bytes += sum(len(json.dumps(m, separators=(",", ":"))) for m in batch)
            st, raw = c.call("POST", "/mcp/context/%s/messages" % cid, {"messages": batch})
            if st not in (200, 201):
                sys.exit("prep.py fill: HTTP %d %s" % (st, raw[:300]))
            done += len(batch)
    print(json.dumps({"raw_bytes": raw_bytes, "seconds": round(time.monotonic() - t0, 3)}))


def probe(port, body):
    st, raw = Client(port).call("POST", "/mcp/context", body)
    print(json.dumps({"status": st, "body": raw.decode("utf-8", "replace").strip()}))


def turns(port, ids_file, count):
    c = Client(port)
    ids = [l.strip() for l in open(ids_file) if l.strip()]
    body = {"message": "What is the weather like on the coast this week?"}
    lat, errors = [], 0
    t0 = time.monotonic()
    for i in range(count + 3):
        if i == 3:
            t0 = time.monotonic()
        t = time.monotonic()
        st, _ = c.call("POST", "/mcp/context/%s/message" % ids[i % len(ids)], body)
        if i >= 3:
            lat.append((time.monotonic() - t) * 1e6)
            errors += st != 200
    secs = time.monotonic() - t0
    lat.sort()

    def p(q):
        return int(lat[min(len(lat) - 1, int(len(lat) * q / 100.0))])
    print(json.dumps({"requests": count, "duration_s": round(secs, 3),
                      "rps": round(count / secs, 1), "p50_us": p(50), "p90_us": p(90),
                      "p99_us": p(99), "max_us": int(lat[-1]),
                      "mean_us": round(sum(lat) / len(lat), 1), "err_status": errors,
                      "errors": errors}))


def capture(port, out):
    st, raw = Client(port).call("GET", "/_admin/requests")
    reqs = [r for r in json.loads(raw)["requests"] if r["path"].startswith("/v1/messages")]
    if not reqs:
        sys.exit("prep.py capture: the fake upstream saw no /v1/messages request")
    with open(out, "w") as f:
        json.dump(reqs[-1]["body"], f, separators=(",", ":"))
    print(json.dumps({"messages": len(reqs[-1]["body"].get("messages", [])),
                      "bytes": len(json.dumps(reqs[-1]["body"], separators=(",", ":")))}))


def whole(usage):
    """The prompt's tokens: Anthropic's input_tokens leaves out the cached part."""
    return (usage["input_tokens"] + usage.get("cache_creation_input_tokens", 0) +
            usage.get("cache_read_input_tokens", 0))


def token_error(port, turns):
    """Scenario 8: how far ctxd's estimate of a new message (bytes / 4 + 4)
    falls from the upstream's own count, which ctxd derives after the turn
    (the whole prompt now - the whole prompt before - the reply in between)."""
    c = Client(port)
    st, raw = c.call("POST", "/mcp/context", {"strategy": "window",
                                              "max_context_tokens": 1000000})
    cid = json.loads(raw)["context_id"]
    for i in range(turns):
        st, raw = c.call("POST", "/mcp/context/%s/message" % cid,
                         {"message": text(i, 40 + (i * 37) % 400)})
        if st != 200:
            sys.exit("prep.py tokens: HTTP %d %s" % (st, raw[:300]))
    st, raw = c.call("GET", "/mcp/context/%s" % cid)
    msgs = json.loads(raw)["messages"]
    errors = []
    for k in range(1, len(msgs) // 2):
        user, reply, prev = msgs[2 * k], msgs[2 * k + 1], msgs[2 * k - 1]
        exact = whole(reply["usage"]) - whole(prev["usage"]) - prev["tokens"]
        estimate = len(user["content"].encode()) // 4 + 4
        if exact > 0:
            errors.append((estimate - exact) / exact)
    errors.sort(key=abs)
    print(json.dumps({"turns": turns, "samples": len(errors),
                      "mean_abs_pct": round(100 * sum(abs(e) for e in errors) / len(errors), 1),
                      "p90_abs_pct": round(100 * abs(errors[int(len(errors) * 0.9)]), 1),
                      "max_abs_pct": round(100 * abs(errors[-1]), 1),
                      "mean_pct": round(100 * sum(errors) / len(errors), 1)}))


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "create":
        create(int(a[1]), int(a[2]), a[3], json.loads(a[4]) if len(a) > 4 else None)
    elif a[0] == "fill":
        fill(int(a[1]), a[2], int(a[3]), int(a[4]) if len(a) > 4 else 120)
    elif a[0] == "probe":
        probe(int(a[1]), json.loads(a[2]))
    elif a[0] == "turns":
        turns(int(a[1]), a[2], int(a[3]))
    elif a[0] == "tokens":
        token_error(int(a[1]), int(a[2]))
    elif a[0] == "capture":
        capture(int(a[1]), a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
