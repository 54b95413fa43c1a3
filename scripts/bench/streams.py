#!/usr/bin/python3
"""streams.py: open N streaming turns at once and see how many ctxd holds.

    streams.py PORT IDS N [TIMEOUT_S]

Each stream is one connection, POST /mcp/context/{id}/message with
"stream": true, on its own context (ids from the file IDS). All N start
together; prints one JSON line: completed (200 with an "event: done"),
failed (by reason), peak_open (most streams between first byte and end at
the same instant), first-byte and total latency percentiles in ms.
"""
import asyncio
import json
import sys
import time

BODY = b'{"message":"Tell me about the coastline and the weather there","stream":true}'


async def one(port, cid, deadline):
    t0 = time.monotonic()
    out = {"start": t0, "first": None, "end": None, "ok": False, "why": None}
    w = None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                      deadline - t0)
        w.write(b"POST /mcp/context/%s/message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (cid.encode(), len(BODY), BODY))
        await w.drain()
        data = b""
        while True:
            chunk = await asyncio.wait_for(r.read(65536), deadline - time.monotonic())
            if chunk and out["first"] is None:
                out["first"] = time.monotonic()
            data += chunk
            # The last chunk (a size of 0) after the head, not a head that
            # happens to end in "0\r\n\r\n" (an X-Request-Id ending in 0).
            head_end = data.find(b"\r\n\r\n")
            if not chunk or (head_end >= 0 and data[head_end + 4:].endswith(b"\r\n0\r\n\r\n")):
                break
        out["end"] = time.monotonic()
        status = data[9:12].decode("ascii", "replace") if data.startswith(b"HTTP/") else "none"
        if status != "200":
            out["why"] = "status " + status
        elif b"event: error" in data:
            out["why"] = "error event"
        elif b"event: done" not in data:
            out["why"] = "stream ended without done"
        else:
            out["ok"] = True
    except asyncio.TimeoutError:
        out["why"] = "timeout"
    except ConnectionRefusedError:
        out["why"] = "connection refused"
    except OSError as e:
        out["why"] = "socket error: %s" % (e.strerror or e.__class__.__name__)
    finally:
        if w is not None:
            w.close()
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * p / 100.0))] * 1000.0, 1)


async def run(port, ids, n, timeout):
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    res = await asyncio.gather(*(one(port, ids[i], deadline) for i in range(n)))
    wall = time.monotonic() - t0
    why = {}
    for r in res:
        if not r["ok"]:
            why[r["why"]] = why.get(r["why"], 0) + 1
    events = []
    for r in res:
        if r["first"] is not None and r["end"] is not None:
            events += [(r["first"], 1), (r["end"], -1)]
    peak = cur = 0
    for _, d in sorted(events):
        cur += d
        peak = max(peak, cur)
    ok = [r for r in res if r["ok"]]
    return {"n": n, "completed": len(ok), "failed": n - len(ok), "fail_reasons": why,
            "peak_open": peak, "wall_s": round(wall, 2),
            "first_byte_p50_ms": pct([r["first"] - r["start"] for r in ok], 50),
            "first_byte_max_ms": pct([r["first"] - r["start"] for r in ok], 100),
            "total_p50_ms": pct([r["end"] - r["start"] for r in ok], 50),
            "total_p99_ms": pct([r["end"] - r["start"] for r in ok], 99),
            "total_max_ms": pct([r["end"] - r["start"] for r in ok], 100)}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    port, n = int(sys.argv[1]), int(sys.argv[3])
    ids = [l.strip() for l in open(sys.argv[2]) if l.strip()]
    if len(ids) < n:
        sys.exit("streams.py: need %d context ids, have %d" % (n, len(ids)))
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    print(json.dumps(asyncio.run(run(port, ids, n, timeout))))


if __name__ == "__main__":
    main()
