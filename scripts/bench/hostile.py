#!/usr/bin/python3
"""hostile.py: hold idle, slowloris and slow-body connections open on ctxd.

    hostile.py PORT CONTEXT_ID [IDLE SLOWLORIS SLOWBODY [MAX_S]]

Opens IDLE connections that never send a byte, SLOWLORIS that send part of a
request head (GET /healthz, an unfinished header line) and SLOWBODY that send
a whole head (POST /mcp/context/CONTEXT_ID/message, Content-Length: 1000000)
and then the first body byte (defaults 500 200 200). A thread
then sends one more byte on every slowloris and slow-body connection every
0.5-1 s, and re-opens at once, in the same shape, any connection the server
closes (ctxd answers 408 when CTXD_HEADER_TIMEOUT_MS / CTXD_BODY_TIMEOUT_MS
run out and closes idle ones silently), so the same number stays held for
however long the measurement takes.

Prints "READY {...}" once every connection is open, then holds them until
SIGTERM or SIGINT (or MAX_S, default 600) and prints one JSON line: per kind
and in all, how many were asked for, still open at the end and the fewest
open after a trickle round; per kind how many the server closed (with 408 or
another answer, or none) and were re-opened; bytes trickled, failed connects.
"""
import json
import random
import resource
import selectors
import signal
import socket
import sys
import threading
import time

KINDS = ("idle", "slowloris", "slowbody")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Holder:
    def __init__(self, port, cid, want):
        self.port, self.want = port, want
        self.sel = selectors.DefaultSelector()
        self.socks = {k: set() for k in KINDS}
        self.serial = 0
        self.heads = {
            "idle": lambda i: b"",
            "slowloris": lambda i: b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad-%d: " % i,
            "slowbody": lambda i: (b"POST /mcp/context/%s/message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Content-Length: 1000000\r\n\r\n{" % cid.encode()),
        }
        self.stats = {k: {"want": want[k], "closed_by_server": 0, "answered_408": 0,
                          "answered_other": 0, "reopened": 0, "min_open": None}
                      for k in KINDS}
        self.connect_failed = 0
        self.trickled = 0
        self.min_total = None

    def open(self, kind):
        self.serial += 1
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            head = self.heads[kind](self.serial)
            if head:
                s.sendall(head)
            s.setblocking(False)
        except OSError:
            self.connect_failed += 1
            return False
        self.socks[kind].add(s)
        self.sel.register(s, selectors.EVENT_READ, kind)
        return True

    def drop(self, s, kind):
        self.sel.unregister(s)
        self.socks[kind].discard(s)
        s.close()

    def server_closed(self, s, kind, reopen):
        """s is readable or failed: ctxd answered (408) or closed it."""
        st = self.stats[kind]
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 408"):
            st["answered_408"] += 1
        elif data:
            st["answered_other"] += 1
        st["closed_by_server"] += 1
        self.drop(s, kind)
        if reopen and self.open(kind):
            st["reopened"] += 1

    def note_open(self):
        total = 0
        for k in KINDS:
            n, st = len(self.socks[k]), self.stats[k]
            st["min_open"] = n if st["min_open"] is None else min(st["min_open"], n)
            total += n
        self.min_total = total if self.min_total is None else min(self.min_total, total)

    def poll(self, timeout, reopen=True):
        for key, _ in self.sel.select(timeout):
            self.server_closed(key.fileobj, key.data, reopen)

    def trickle(self, stop):
        next_send = time.monotonic() + random.uniform(0.5, 1.0)
        while not stop.is_set():
            self.poll(max(0.0, min(0.1, next_send - time.monotonic())))
            if time.monotonic() < next_send:
                continue
            for kind in ("slowloris", "slowbody"):
                for s in list(self.socks[kind]):
                    try:
                        s.send(b"a")
                        self.trickled += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.server_closed(s, kind, True)
            self.note_open()
            next_send = time.monotonic() + random.uniform(0.5, 1.0)

    def summary(self, held_s):
        self.poll(0, reopen=False)  # whatever ctxd closed at the very end
        self.note_open()
        out = {"min_open": self.min_total, "held_s": round(held_s, 1), "connect_failed": self.connect_failed,
               "trickled_bytes": self.trickled, "open_at_end": 0, "want": 0}
        for k in KINDS:
            st = self.stats[k]
            st["open_at_end"] = len(self.socks[k])
            out[k] = st
            out["open_at_end"] += st["open_at_end"]
            out["want"] += st["want"]
        return out


def main():
    a = sys.argv[1:]
    if len(a) < 2:
        sys.exit(__doc__)
    port, cid = int(a[0]), a[1]
    n = [int(x) for x in a[2:5]] if len(a) >= 5 else [500, 200, 200]
    max_s = float(a[5]) if len(a) > 5 else 600.0
    nofile = raise_fd_limit()
    if nofile < sum(n) + 64:
        sys.exit("hostile.py: RLIMIT_NOFILE %d is too low for %d connections" % (nofile, sum(n)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    h = Holder(port, cid, dict(zip(KINDS, n)))
    t0 = time.monotonic()
    for kind, count in zip(KINDS, n):
        for _ in range(count):
            h.open(kind)
    h.note_open()
    print("READY " + json.dumps({"open": sum(len(h.socks[k]) for k in KINDS),
                                 "open_s": round(time.monotonic() - t0, 2)}), flush=True)
    t = threading.Thread(target=h.trickle, args=(stop,), daemon=True)
    t.start()
    t1 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t1 < max_s:
        time.sleep(0.1)
    stop.set()
    t.join()
    print(json.dumps(h.summary(time.monotonic() - t1)), flush=True)
    for k in KINDS:
        for s in list(h.socks[k]):
            h.drop(s, k)


if __name__ == "__main__":
    main()
